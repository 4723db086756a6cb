"""End to end through the `kvasir` command, in-process: fit -> test on a tiny synthetic set."""

import json

import pytest
import yaml
from PIL import Image

from kvasir_mobileone.cli import main


def test_fit_writes_a_complete_run_folder(trained_run, tiny_data):
    for name in (
        "config.yaml",
        "split_manifest.csv",
        "split_counts.json",
        "checkpoints/best.ckpt",
        "checkpoints/last.ckpt",
    ):
        assert (trained_run / name).is_file(), name
    config = yaml.safe_load((trained_run / "config.yaml").read_text())
    assert config["data"]["data_dir"] == str(tiny_data) and config["model"]["name"] == "mobileone_s0"
    assert json.loads((trained_run / "split_counts.json").read_text())["test"] == {
        c: 4 for c in sorted(p.name for p in tiny_data.iterdir() if not p.name.startswith("."))
    }


def test_wandb_offline_run_is_written(trained_run):
    runs = list((trained_run / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("run-*.wandb")), "no offline W&B run file"


def test_test_command_reports_above_chance(trained_run):
    main(["test", str(trained_run), "--num_workers", "0"])
    out = trained_run / "test"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 16 and metrics["accuracy"] > 0.5  # 4 classes: chance is 0.25
    report = (out / "report.md").read_text()
    assert "| Accuracy | Top-3 | Top-5 | F1 | macro-F1 |" in report
    for png in ("confusion_matrix.png", "confusion_matrix_normalized.png"):
        with Image.open(out / png) as image:
            assert image.format == "PNG" and image.size[0] > 300
    assert (out / "per_class.csv").read_text().startswith("class,precision,recall,f1,support")
    assert len((out / "predictions.csv").read_text().splitlines()) == 17


def test_test_refuses_a_manifest_with_other_classes(trained_run, tmp_path):
    manifest = (trained_run / "split_manifest.csv").read_text().replace(",dyed-lifted-polyps,", ",tumours,")
    (tmp_path / "m.csv").write_text(manifest)
    with pytest.raises(ValueError, match="predicts classes"):
        main(["test", str(trained_run), "--manifest", str(tmp_path / "m.csv"), "--num_workers", "0"])


def test_eda_writes_charts_and_counts(tiny_data, trained_run, tmp_path):
    main(
        [
            "eda",
            "--data",
            str(tiny_data),
            "--out",
            str(tmp_path),
            "--manifest",
            str(trained_run / "split_manifest.csv"),
        ]
    )
    summary = json.loads((tmp_path / "class_counts.json").read_text())
    assert summary["total"] == 160 and set(summary["splits"]) == {"train", "val", "test"}
    for png in ("class_counts.png", "samples.png", "resolutions.png"):
        with Image.open(tmp_path / png) as image:
            assert image.format == "PNG"
    assert "| class | images | train | val | test |" in (tmp_path / "class_counts.md").read_text()
