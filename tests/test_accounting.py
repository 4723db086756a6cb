"""Nothing silent: every image used or reported, errors as one-line messages, small classes named, resume offline."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import timm
from safetensors.torch import save_file

from fitflags import fit_flags
from kvasir_mobileone.cli import main
from kvasir_mobileone.data.folder import DataError, scan_image_folder
from kvasir_mobileone.data.split import make_split, write_manifest
from kvasir_mobileone.data.synth import synth
from kvasir_mobileone.errors import UserError

TINY_FIT = fit_flags(batch_size=8, lr=None)  # resnet10t: these tests check plumbing, not learning


def kvasir(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "kvasir_mobileone.cli", *args],
        capture_output=True,
        text=True,
        env=os.environ | (env or {}),
    )


@pytest.fixture
def broken_after_check(tiny_data, tmp_path):
    """A copy of tiny_data and its split manifest, made while every file was good."""
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    rows = make_split(scan_image_folder(data), seed=1)
    write_manifest(tmp_path / "manifest.csv", rows)
    return data, rows


@pytest.mark.parametrize("cache", ["true", "false"])
def test_a_training_image_that_breaks_is_skipped_and_reported(broken_after_check, tmp_path, cache):
    data, rows = broken_after_check
    broken = next(r["path"] for r in rows if r["split"] == "train")
    (data / broken).write_bytes(b"broken after the check")
    main(
        [
            "fit",
            "--data.data_dir",
            str(data),
            "--data.manifest",
            str(tmp_path / "manifest.csv"),
            *TINY_FIT,
            "--data.cache",
            cache,
            "--trainer.max_epochs",
            "1",
            "--trainer.runs_dir",
            str(tmp_path),
            "--trainer.run_name",
            "r",
        ]
    )
    problems = (tmp_path / "r" / "data_problems.csv").read_text()
    assert f"{broken},skipped-in-training,error," in problems
    # every test image is in the report
    assert json.loads((tmp_path / "r" / "test" / "metrics.json").read_text())["n"] == 16


def test_a_test_image_that_breaks_stops_test_and_features_naming_it(broken_after_check, tmp_path):
    data, rows = broken_after_check
    main(
        [
            "fit",
            "--data.data_dir",
            str(data),
            "--data.manifest",
            str(tmp_path / "manifest.csv"),
            *TINY_FIT,
            "--data.cache",
            "false",
            "--trainer.max_epochs",
            "1",
            "--trainer.runs_dir",
            str(tmp_path),
            "--trainer.run_name",
            "r",
            "--test_after",
            "false",
        ]
    )
    broken = next(r["path"] for r in rows if r["split"] == "test")
    (data / broken).write_bytes(b"broken after training")
    with pytest.raises(DataError, match=f"Cannot read .*{broken}.*a test image"):
        main(["test", str(tmp_path / "r"), "--num_workers", "0"])
    with pytest.raises(DataError, match=f"Cannot read .*{broken}"):
        main(["features", str(tmp_path / "r"), "--out", str(tmp_path / "f"), "--num_workers", "0"])
    assert not (tmp_path / "f" / "features.npz").exists()


def test_errors_are_one_line_messages_with_a_debug_switch(tmp_path):
    missing = kvasir("check", "--data_dir", str(tmp_path / "missing"))
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert missing.stderr.startswith(f"error: Data directory {tmp_path / 'missing'} does not exist.")
    debug = kvasir("check", "--data_dir", str(tmp_path / "missing"), env={"KVASIR_DEBUG": "1"})
    assert debug.returncode == 2 and "Traceback" in debug.stderr
    bad_run = kvasir("test", str(tmp_path))
    assert bad_run.returncode == 2 and "is it a run folder" in bad_run.stderr and "Traceback" not in bad_run.stderr


def test_user_errors_are_user_errors(tmp_path, tiny_data):
    one = tmp_path / "one"
    shutil.copytree(tiny_data / "esophagitis", one / "esophagitis")
    with pytest.raises(UserError, match="single class"):
        main(["check", "--data_dir", str(one)])
    with pytest.raises(UserError, match="no test/predictions.csv"):
        main(["compare", str(tmp_path), str(one), "--out", str(tmp_path / "c")])


def test_a_class_too_small_for_every_split_is_named_recorded_and_reported(tmp_path, recwarn):
    data = synth(str(tmp_path / "data"), images_per_class=12, seed=3, scale=0.1, classes=("polyps", "normal-cecum"))
    synth(str(tmp_path / "few"), images_per_class=2, seed=4, scale=0.1, classes=("esophagitis",))
    shutil.copytree(tmp_path / "few" / "esophagitis", data / "esophagitis")
    main(
        [
            "fit",
            "--data.data_dir",
            str(data),
            *TINY_FIT,
            "--trainer.max_epochs",
            "1",
            "--trainer.runs_dir",
            str(tmp_path),
            "--trainer.run_name",
            "r",
        ]
    )
    counts = json.loads((tmp_path / "r" / "split_counts.json").read_text())
    assert counts["classes_missing_from_splits"] == {"esophagitis": ["val", "test"]}
    assert any("'esophagitis' has no val/test image" in str(w.message) for w in recwarn)
    metrics = json.loads((tmp_path / "r" / "test" / "metrics.json").read_text())
    assert metrics["classes_without_test_images"] == ["esophagitis"]
    assert "no test image of esophagitis" in (tmp_path / "r" / "test" / "report.md").read_text()


def test_check_names_a_class_too_small_for_every_split(tmp_path, capsys):
    data = synth(str(tmp_path / "data"), images_per_class=12, seed=3, scale=0.1, classes=("polyps", "normal-cecum"))
    synth(str(tmp_path / "few"), images_per_class=2, seed=4, scale=0.1, classes=("esophagitis",))
    shutil.copytree(tmp_path / "few" / "esophagitis", data / "esophagitis")
    main(["check", "--data_dir", str(data)])
    assert "'esophagitis' has no val/test image" in capsys.readouterr().out


def test_resume_of_a_pretrained_run_needs_no_pretrained_weights(tiny_data, tmp_path):
    weights = tmp_path / "imagenet.safetensors"
    save_file(timm.create_model("resnet10t", num_classes=1000).state_dict(), weights)
    args = [a for a in TINY_FIT if a not in ("--model.pretrained", "false")]
    main(
        [
            "fit",
            "--data.data_dir",
            str(tiny_data),
            *args,
            "--model.weights",
            str(weights),
            "--trainer.max_epochs",
            "1",
            "--trainer.runs_dir",
            str(tmp_path),
            "--trainer.run_name",
            "r",
            "--test_after",
            "false",
        ]
    )
    weights.unlink()  # offline, on another machine: the pretrained source is gone, last.ckpt holds every weight
    main(["fit", "--resume", str(tmp_path / "r")])
    assert json.loads((tmp_path / "r" / "test" / "metrics.json").read_text())["n"] == 16
