"""Bad folders, untrusted checkpoints, interrupted runs, DDP and reproducibility."""

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from fitflags import fit_flags
from kvasir_mobileone.cli import main
from kvasir_mobileone.data.check import DataCheckError, check_folder
from kvasir_mobileone.data.folder import DataError, scan_image_folder
from kvasir_mobileone.data.synth import synth
from kvasir_mobileone.images import load_rgb
from kvasir_mobileone.models.classifier import Classifier
from kvasir_mobileone.runs import UnsafeCheckpointError

TINY_FIT = fit_flags(batch_size=8, logger=None)  # resnet10t: plumbing, not learning
# MobileOne-S0 trains slowly enough on 2 cores to be killed mid-run
SLOW_FIT = fit_flags("mobileone_s0", 8, logger=None)


def kvasir(*args: str, **kwargs) -> subprocess.Popen:
    """The installed `kvasir` command in a real subprocess."""
    return subprocess.Popen([sys.executable, "-m", "kvasir_mobileone.cli", *args], **kwargs)


@pytest.fixture(scope="module")
def messy(tmp_path_factory):
    """Two good classes plus every kind of odd file that real folders hold."""
    root = synth(
        str(tmp_path_factory.mktemp("messy") / "data"),
        images_per_class=12,
        seed=5,
        scale=0.1,
        classes=("polyps", "normal-cecum"),
    )
    good = root / "polyps" / "synth_00000.jpg"
    odd = root / "polyps"
    (odd / "zero.jpg").write_bytes(b"")
    (odd / "truncated.jpg").write_bytes(good.read_bytes()[:200])
    (odd / "text.jpg").write_text("not an image")
    Image.new("RGB", (40, 40), (200, 30, 30)).save(odd / "rgb.png")
    Image.new("L", (40, 40), 120).save(odd / "grey.jpg")
    Image.new("RGBA", (40, 40), (10, 200, 10, 128)).save(odd / "alpha.png")
    Image.new("CMYK", (40, 40), (0, 255, 255, 0)).save(odd / "cmyk.jpg")
    Image.fromarray(np.full((40, 40), 30000, np.uint16)).save(odd / "deep16.png")
    rotated = Image.new("RGB", (60, 40), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees on display
    rotated.save(odd / "exif_rotated.jpg", exif=exif)
    Image.new("1", (16000, 16000)).save(odd / "bomb.png")  # 256 Mpx in a few kB: over Pillow's bomb limit
    Image.new("RGB", (8, 8), (255, 0, 0)).save(odd / "tiny.png")
    (odd / ".DS_Store").write_bytes(b"\0\0")
    (odd / "Thumbs.db").write_bytes(b"\0")
    (odd / "notes.txt").write_text("x")
    (root / "__MACOSX").mkdir()
    (root / "__MACOSX" / "._x.jpg").write_bytes(b"\0")
    shutil.copy(good, odd / "ünïcode name with spaces.jpg")
    os.symlink(good, odd / "link.jpg")
    os.symlink(odd / "missing.jpg", odd / "broken_link.jpg")
    shutil.copy(good, root / "normal-cecum" / "copied_across.jpg")  # an exact duplicate, in another class
    (root / "normal-cecum" / "reencoded.jpg").write_bytes(near_duplicate_of(root / "normal-cecum" / "synth_00000.jpg"))
    (root / "empty-class").mkdir()
    return root


def phash_bits(data: bytes) -> int:
    import imagehash

    with Image.open(io.BytesIO(data)) as image:
        return int(str(imagehash.phash(image.convert("RGB"))), 16)


def near_duplicate_of(path: Path) -> bytes:
    """A re-encoded, slightly changed copy whose perceptual hash differs from the original's in 1 or 2 bits."""
    original = phash_bits(path.read_bytes())
    with Image.open(path) as image:
        for step in range(1, 60):
            buffer = io.BytesIO()
            shifted = Image.eval(image.convert("RGB"), lambda v, s=step: min(255, v + s))
            shifted.crop((step, 0, shifted.width, shifted.height)).save(buffer, "JPEG", quality=70)
            if 1 <= bin(phash_bits(buffer.getvalue()) ^ original).count("1") <= 2:
                return buffer.getvalue()
    raise AssertionError("no near-duplicate within 2 bits found")


def test_check_lists_every_problem(messy):
    report = check_folder(messy)
    by_kind: dict[str, set] = {}
    for p in report.problems:
        by_kind.setdefault(p.kind, set()).add(Path(p.path).name)
    assert by_kind["unreadable"] == {"zero.jpg", "truncated.jpg", "text.jpg", "bomb.png"}
    assert by_kind["broken-link"] == {"broken_link.jpg"}
    assert {p.path for p in report.excluded} >= {"polyps/zero.jpg", "polyps/broken_link.jpg"}
    assert {"cmyk.jpg", "deep16.png", "alpha.png"} <= by_kind["converted"]
    assert by_kind["small"] == {"tiny.png"} and by_kind["empty-class"] == {"empty-class"}
    assert "notes.txt" in by_kind["ignored"] and "__MACOSX" in by_kind["ignored"]
    assert not {".DS_Store", "Thumbs.db"} & set().union(*by_kind.values())
    assert "copied_across.jpg" in " ".join(p.path + p.message for p in report.problems if p.kind == "label-conflict")
    groups = [{Path(m).name for m in g} for g in report.duplicate_groups]
    assert any({"synth_00000.jpg", "reencoded.jpg"} <= g for g in groups)
    usable = {Path(rel).name for rel, _ in report.items}
    assert {"ünïcode name with spaces.jpg", "link.jpg", "exif_rotated.jpg", "grey.jpg"} <= usable


def test_odd_formats_decode_to_sensible_rgb(messy):
    deep = np.asarray(load_rgb(messy / "polyps" / "deep16.png"))
    assert deep.shape == (40, 40, 3) and abs(int(deep[0, 0, 0]) - round(30000 / 65535 * 255)) <= 1  # scaled
    assert load_rgb(messy / "polyps" / "exif_rotated.jpg").size == (40, 60)  # upright
    assert load_rgb(messy / "polyps" / "cmyk.jpg").mode == "RGB"


def test_check_command_and_single_class_and_missing_dir(messy, tmp_path, capsys):
    main(["check", "--data_dir", str(messy), "--out", str(tmp_path)])
    assert "would be excluded" in capsys.readouterr().out
    assert "truncated.jpg" in (tmp_path / "problems.csv").read_text()
    one = tmp_path / "one"
    shutil.copytree(messy / "normal-cecum", one / "normal-cecum")
    with pytest.raises(DataCheckError, match="single class"):
        check_folder(one)
    with pytest.raises(DataError, match="does not exist"):
        check_folder(tmp_path / "nope")


def test_strict_fit_fails_naming_the_bad_files(messy, tmp_path):
    with pytest.raises(DataCheckError, match="truncated.jpg"):
        main(
            [
                "fit",
                "--data.data_dir",
                str(messy),
                *TINY_FIT,
                "--strict",
                "true",
                "--trainer.runs_dir",
                str(tmp_path),
                "--trainer.logger",
                "none",
            ]
        )


def test_fit_excludes_unreadable_files_and_records_them(messy, tmp_path):
    main(
        [
            "fit",
            "--data.data_dir",
            str(messy),
            *TINY_FIT,
            "--trainer.max_epochs",
            "1",
            "--test_after",
            "false",
            "--trainer.runs_dir",
            str(tmp_path),
            "--trainer.run_name",
            "r",
            "--trainer.logger",
            "none",
        ]
    )
    run = tmp_path / "r"
    manifest = (run / "split_manifest.csv").read_text()
    assert "truncated.jpg" not in manifest and "bomb.png" not in manifest and "deep16.png" in manifest
    assert "truncated.jpg" in (run / "data_problems.csv").read_text()


def test_near_duplicates_share_a_split_whatever_the_seed(messy):
    from kvasir_mobileone.data.split import make_split

    report = check_folder(messy)
    together = 0
    for seed in range(10):
        rows = make_split(report.items, 0.3, 0.3, seed, report.group_of())
        split_of = {r["path"]: r["split"] for r in rows}
        together += split_of["normal-cecum/synth_00000.jpg"] == split_of["normal-cecum/reencoded.jpg"]
    assert together == 10  # without grouping, 10 seeds in a row would keep them together about once in 50,000


def test_manifest_naming_missing_files_is_refused(trained_run, tmp_path):
    manifest = (trained_run / "split_manifest.csv").read_text()
    (tmp_path / "m.csv").write_text(manifest + "polyps/gone.jpg,polyps,test\n")
    with pytest.raises(DataError, match="gone.jpg"):
        main(["test", str(trained_run), "--manifest", str(tmp_path / "m.csv")])


class Evil:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['KVASIR_PWNED']}",))


def test_malicious_checkpoint_runs_nothing_and_is_refused(trained_run, tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("KVASIR_PWNED", str(marker))
    ckpt = torch.load(trained_run / "checkpoints" / "best.ckpt", weights_only=True)
    ckpt["payload"] = Evil()
    torch.save(ckpt, tmp_path / "evil.ckpt")
    with pytest.raises(UnsafeCheckpointError, match="Refused to load .*evil.ckpt"):
        Classifier.from_checkpoint(tmp_path / "evil.ckpt")
    run = tmp_path / "run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("wandb"))
    shutil.copy(tmp_path / "evil.ckpt", run / "checkpoints" / "last.ckpt")
    with pytest.raises(Exception, match="(?i)weights.only|unpickl|unsupported global"):
        main(["fit", "--resume", str(run)])
    shutil.copy(tmp_path / "evil.ckpt", run / "checkpoints" / "best.ckpt")
    for command in (
        ["test", str(run)],
        ["export", str(run), "--out", str(tmp_path / "b")],
        ["predict", str(messy_free_image(trained_run)), "--model", str(run)],
        ["features", str(run), "--out", str(tmp_path / "f")],
    ):
        with pytest.raises(UnsafeCheckpointError, match="Refused to load"):
            main(command)
    assert not marker.exists()


def messy_free_image(run: Path) -> Path:
    config = yaml.safe_load((run / "config.yaml").read_text())
    return next(Path(config["data"]["data_dir"]).glob("*/*.jpg"))


@pytest.mark.slow
def test_killed_fit_resumes_and_completes(tiny_data, tmp_path):
    args = [
        "fit",
        "--data.data_dir",
        str(tiny_data),
        *SLOW_FIT,
        "--trainer.max_epochs",
        "6",
        "--trainer.runs_dir",
        str(tmp_path),
        "--trainer.run_name",
        "r",
        "--trainer.logger",
        "csv",
    ]
    last = tmp_path / "r" / "checkpoints" / "last.ckpt"
    process = kvasir(*args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not last.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)  # into the next epoch
    assert process.poll() is None, "fit ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = torch.load(last, weights_only=True)["epoch"]
    assert killed_at < 5 and not (tmp_path / "r" / "test").exists()
    for ckpt in last.parent.glob("*.ckpt"):  # nothing half-written is left to be taken for a checkpoint
        torch.load(ckpt, weights_only=True)
    resumed = kvasir(
        "fit", "--resume", str(tmp_path / "r"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    progress = resumed.communicate()[0]  # Lightning's progress bar: "Epoch N: ..."
    assert resumed.returncode == 0
    assert torch.load(last, weights_only=True)["epoch"] == 5
    # it went on from the epoch after the last checkpoint: the epochs before it were not trained again
    assert f"Epoch {killed_at + 1}:" in progress and "Epoch 0:" not in progress
    assert json.loads((tmp_path / "r" / "test" / "metrics.json").read_text())["n"] == 16


@pytest.mark.slow
def test_ddp_two_processes_match_a_single_process_test(tiny_data, tmp_path):
    from kvasir_mobileone.data.split import make_split, write_manifest

    rows = make_split(scan_image_folder(tiny_data), seed=1)
    rows.remove(next(r for r in rows if r["split"] == "test"))  # 15 test images: the sampler pads rank 1
    write_manifest(tmp_path / "m.csv", rows)
    args = [
        "fit",
        "--data.data_dir",
        str(tiny_data),
        "--data.manifest",
        str(tmp_path / "m.csv"),
        *TINY_FIT,
        "--trainer.max_epochs",
        "2",
        "--trainer.runs_dir",
        str(tmp_path),
        "--trainer.run_name",
        "ddp",
        "--trainer.logger",
        "csv",
        "--trainer.strategy",
        "ddp",
        "--trainer.devices",
        "2",
        "--trainer.accelerator",
        "cpu",
    ]
    assert kvasir(*args).wait() == 0
    run = tmp_path / "ddp"
    ddp_metrics = json.loads((run / "test" / "metrics.json").read_text())
    single = main(["test", str(run), "--out", str(tmp_path / "single"), "--num_workers", "0"])
    assert ddp_metrics["n"] == single["n"] == 15  # every test image once, though the sampler padded a rank
    ddp_rows = sorted((run / "test" / "predictions.csv").read_text().splitlines()[1:])
    single_rows = sorted((tmp_path / "single" / "predictions.csv").read_text().splitlines()[1:])
    assert [r.split(",")[:3] for r in ddp_rows] == [r.split(",")[:3] for r in single_rows]  # path, label, predicted
    for a, b in zip(ddp_rows, single_rows, strict=True):
        assert np.allclose([float(v) for v in a.split(",")[3:]], [float(v) for v in b.split(",")[3:]], atol=1e-5)
    assert len(list((run / "checkpoints").glob("*.ckpt"))) == 2  # rank 0 alone wrote best and last


def test_deterministic_runs_repeat_exactly(tiny_data, tmp_path):
    metrics = []
    for name in ("a", "b"):
        main(
            [
                "fit",
                "--data.data_dir",
                str(tiny_data),
                *TINY_FIT,
                "--trainer.max_epochs",
                "2",  # two: the second epoch's shuffle, seeded by (seed, epoch), is compared too
                "--trainer.deterministic",
                "true",
                "--trainer.runs_dir",
                str(tmp_path),
                "--trainer.run_name",
                name,
                "--trainer.logger",
                "none",
            ]
        )
        metrics.append(json.loads((tmp_path / name / "test" / "metrics.json").read_text()))
    assert (tmp_path / "a" / "split_manifest.csv").read_text() == (tmp_path / "b" / "split_manifest.csv").read_text()
    assert metrics[0]["loss"] == metrics[1]["loss"] and metrics[0]["confusion_matrix"] == metrics[1]["confusion_matrix"]


def test_the_check_reads_unchanged_files_once_and_changed_files_again(tiny_data, tmp_path, monkeypatch):
    import kvasir_mobileone.data.check as check_module

    data = tmp_path / "data"
    for name in ("polyps", "esophagitis"):
        shutil.copytree(tiny_data / "dyed-lifted-polyps" if name == "polyps" else tiny_data / name, data / name)
    first = check_folder(data, workers=1)
    inspected = []
    real = check_module.inspect_image
    monkeypatch.setattr(check_module, "inspect_image", lambda path: inspected.append(path) or real(path))
    again = check_folder(data, workers=1)
    assert inspected == [] and again.items == first.items and again.duplicate_groups == first.duplicate_groups
    changed = data / "polyps" / "synth_00003.jpg"
    shutil.copy(data / "polyps" / "synth_00004.jpg", changed)  # now an exact copy of another image
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    third = check_folder(data, workers=1)
    assert inspected == [str(changed)]
    assert any({"polyps/synth_00003.jpg", "polyps/synth_00004.jpg"} <= set(g) for g in third.duplicate_groups)


def test_the_check_keeps_its_cache_in_the_cache_dir_when_one_is_given(tiny_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_data / "esophagitis", data / "esophagitis")
    shutil.copytree(tiny_data / "normal-cecum", data / "normal-cecum")
    check_folder(data, workers=1, cache_dir=tmp_path / "elsewhere")
    assert (tmp_path / "elsewhere" / "check_v1.json").is_file() and not (data / ".kvasir_cache").exists()
