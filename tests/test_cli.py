"""End to end through the `kvasir` command, in-process: fit -> test on a tiny synthetic set."""

import inspect
import json

import pytest
import yaml
from PIL import Image

from kvasir_mobileone.cli import _command, main


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
    assert config["data"]["data_dir"] == str(tiny_data.resolve()) and config["model"]["name"] == "mobileone_s0"
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
    # 4 classes: chance is 4 of 16; fp32 evaluation gives 11 of 16 here, 3 images above this bound
    assert metrics["n"] == 16 and metrics["accuracy"] >= 0.5 and metrics["eval_precision"] == "32-true"
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


def test_test_reproduces_the_fit_report_exactly_whatever_the_training_precision(tiny_data, tmp_path):
    """Trained with bf16 autocast, tested at the end of fit and again by `kvasir test`: both at the run's fp32
    evaluation precision, so the predictions are equal to the last digit."""
    main(
        [
            "fit",
            "--data.data_dir",
            str(tiny_data),
            "--data.image_size",
            "32",
            "--data.batch_size",
            "8",
            "--model.lr_reference_batch",
            "8",
            "--data.num_workers",
            "0",
            "--model.name",
            "mobileone_s0",
            "--model.pretrained",
            "false",
            "--trainer.precision",
            "bf16-mixed",
            "--trainer.max_epochs",
            "2",
            "--trainer.logger",
            "none",
            "--trainer.runs_dir",
            str(tmp_path),
            "--trainer.run_name",
            "bf16",
        ]
    )
    run = tmp_path / "bf16"
    in_fit = json.loads((run / "test" / "metrics.json").read_text())
    again = main(["test", str(run), "--out", str(tmp_path / "again")])
    assert in_fit["eval_precision"] == again["eval_precision"] == "32-true"
    assert (tmp_path / "again" / "predictions.csv").read_text() == (run / "test" / "predictions.csv").read_text()
    assert again["loss"] == in_fit["loss"] and again["confusion_matrix"] == in_fit["confusion_matrix"]
    # the precision matters: evaluated in bf16 the same checkpoint gives other probabilities
    main(["test", str(run), "--out", str(tmp_path / "bf16_eval"), "--precision", "bf16-mixed"])
    bf16_eval = (tmp_path / "bf16_eval" / "predictions.csv").read_text()
    assert bf16_eval != (run / "test" / "predictions.csv").read_text()


def test_the_data_folder_is_data_dir_everywhere_and_the_old_flag_still_works_with_a_note(tiny_data, capsys):
    new = main(["check", "--data_dir", str(tiny_data)])
    assert "note:" not in capsys.readouterr().err
    old = main(["check", "--data", str(tiny_data)])
    assert "note: --data is now --data_dir" in capsys.readouterr().err
    assert old.items == new.items
    for command in ("check", "eda", "prepare", "test", "features", "audit", "export"):
        parameters = inspect.signature(_command(command)).parameters
        assert "data" not in parameters, command
    assert {
        c for c in ("test", "features", "audit", "export") if "data_dir" in inspect.signature(_command(c)).parameters
    }
