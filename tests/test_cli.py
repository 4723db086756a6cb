"""End to end through the `kvasir` command, in-process: fit -> test on a tiny synthetic set."""

import json

import pytest
import yaml
from PIL import Image

from kvasir_mobileone.cli import main

FIT = [
    "--data.image_size",
    "32",
    "--data.batch_size",
    "8",
    "--data.num_workers",
    "0",
    "--model.name",
    "mobileone_s0",
    "--model.pretrained",
    "false",
    "--model.lr",
    "0.003",
    "--trainer.precision",
    "32-true",
]


@pytest.fixture(scope="module")
def run_dir(tiny_data, tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    main(
        [
            "fit",
            "--data.data_dir",
            str(tiny_data),
            *FIT,
            "--trainer.max_epochs",
            "30",
            "--trainer.logger",
            "wandb",
            "--trainer.runs_dir",
            str(runs),
            "--trainer.run_name",
            "r",
            "--test_after",
            "false",
        ]
    )
    return runs / "r"


def test_fit_writes_a_complete_run_folder(run_dir, tiny_data):
    for name in (
        "config.yaml",
        "split_manifest.csv",
        "split_counts.json",
        "checkpoints/best.ckpt",
        "checkpoints/last.ckpt",
    ):
        assert (run_dir / name).is_file(), name
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["data"]["data_dir"] == str(tiny_data) and config["model"]["name"] == "mobileone_s0"
    assert json.loads((run_dir / "split_counts.json").read_text())["test"] == {
        c: 4 for c in sorted(p.name for p in tiny_data.iterdir())
    }


def test_wandb_offline_run_is_written(run_dir):
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("run-*.wandb")), "no offline W&B run file"


def test_test_command_reports_above_chance(run_dir):
    main(["test", str(run_dir), "--num_workers", "0"])
    out = run_dir / "test"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 16 and metrics["accuracy"] > 0.5  # 4 classes: chance is 0.25
    report = (out / "report.md").read_text()
    assert "| Accuracy | Top-3 | Top-5 | F1 | macro-F1 |" in report
    for png in ("confusion_matrix.png", "confusion_matrix_normalized.png"):
        with Image.open(out / png) as image:
            assert image.format == "PNG" and image.size[0] > 300
    assert (out / "per_class.csv").read_text().startswith("class,precision,recall,f1,support")
    assert len((out / "predictions.csv").read_text().splitlines()) == 17


def test_test_refuses_a_manifest_with_other_classes(run_dir, tmp_path):
    manifest = (run_dir / "split_manifest.csv").read_text().replace("polyps", "tumours")
    (tmp_path / "m.csv").write_text(manifest)
    with pytest.raises(ValueError, match="predicts classes"):
        main(["test", str(run_dir), "--manifest", str(tmp_path / "m.csv"), "--num_workers", "0"])


def test_eda_writes_charts_and_counts(tiny_data, run_dir, tmp_path):
    main(
        [
            "eda",
            "--data",
            str(tiny_data),
            "--out",
            str(tmp_path),
            "--manifest",
            str(run_dir / "split_manifest.csv"),
        ]
    )
    summary = json.loads((tmp_path / "class_counts.json").read_text())
    assert summary["total"] == 160 and set(summary["splits"]) == {"train", "val", "test"}
    for png in ("class_counts.png", "samples.png", "resolutions.png"):
        with Image.open(tmp_path / png) as image:
            assert image.format == "PNG"
    assert "| class | images | train | val | test |" in (tmp_path / "class_counts.md").read_text()
