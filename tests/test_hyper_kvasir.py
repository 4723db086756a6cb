"""HyperKvasir as researchers meet it: nested class folders, the official splits shipped with the package, and
near-duplicate frames that leak across a split, found and reported whoever made the split."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from kvasir_mobileone.cli import main
from kvasir_mobileone.data.catalog import HYPER_KVASIR, OFFICIAL_SPLITS
from kvasir_mobileone.data.check import DataCheckError, check_folder, check_split
from kvasir_mobileone.data.config import DataConfig
from kvasir_mobileone.data.folder import DataError, find_class_folders, scan_image_folder
from kvasir_mobileone.data.official import apply_official_split, read_official_split
from kvasir_mobileone.data.split import GROUP, leak_free_test, write_manifest
from kvasir_mobileone.data.synth import PLANTED, synth
from kvasir_mobileone.deploy.card import card_text
from kvasir_mobileone.evaluation.testing import leak_free_metrics
from kvasir_mobileone.io import read_csv

# a few classes, among them three whose CSV name differs from the folder's (polyp, hemorroids, oesophagitis-a)
HK_CLASSES = ("cecum", "hemorrhoids", "polyps", "bbps-2-3", "esophagitis-a", "z-line")
PLANTED_PAIRS = 6
TINY = {
    "data.image_size": 32,
    "data.batch_size": 8,
    "data.num_workers": 0,
    "model.lr_reference_batch": 8,
    "model.name": "resnet10t",  # plumbing: resnet10t steps cost a fraction of MobileOne's
    "model.pretrained": "false",
    "trainer.precision": "32-true",
    "trainer.logger": "none",
    "trainer.max_epochs": 1,
}
TINY_FIT = [arg for flag, value in TINY.items() for arg in (f"--{flag}", str(value))]


@pytest.fixture(scope="module")
def hk(tmp_path_factory):
    """(dest, labeled-images root): six HyperKvasir classes in the nested layout, the official split's file names,
    and near-duplicate pairs planted across the 2-fold split (one image in fold 0, its copy in fold 1)."""
    dest = tmp_path_factory.mktemp("hk")
    hyper_kvasir = {"layout": "hyper-kvasir", "classes": HK_CLASSES, "near_duplicates": PLANTED_PAIRS}
    return dest, synth(str(dest), images_per_class=16, seed=3, scale=0.1, **hyper_kvasir)


def planted_in_test(dest: Path, rows: list[dict]) -> set[str]:
    """Test images whose planted near-duplicate is in train or val."""
    split = {r["path"]: r["split"] for r in rows}
    leaky = set()
    for pair in read_csv(dest / PLANTED):
        for mine, other in ((pair["original"], pair["copy"]), (pair["copy"], pair["original"])):
            if split[mine] == "test" and split[other] != "test":
                leaky.add(mine)
    return leaky


def test_synth_writes_the_nested_layout_with_all_23_classes_and_official_file_names(tmp_path):
    root = synth(str(tmp_path), images_per_class=1, scale=0.05, layout="hyper-kvasir")
    layout = find_class_folders(root)
    assert layout.kind == "nested" and sorted(layout.classes) == sorted(HYPER_KVASIR.classes)
    assert len(layout.classes) == 23
    assert layout.classes["polyps"].relative_to(root).as_posix() == "lower-gi-tract/pathological-findings/polyps"
    official = read_official_split(OFFICIAL_SPLITS["hyper-kvasir-2fold"][0])
    assert all(Path(rel).name in official for rel, _ in scan_image_folder(root))


def test_the_nested_layout_is_read_as_its_leaf_classes(hk):
    _, root = hk
    items = scan_image_folder(root)
    assert {label for _, label in items} == set(HK_CLASSES)
    assert all(Path(rel).parent.name == label and len(Path(rel).parts) == 4 for rel, label in items)
    assert check_folder(root).layout.startswith("nested layout: 6 class folders")


def test_a_folder_with_images_and_class_folders_or_two_classes_of_one_name_is_an_error(tmp_path):
    for folder in ("mixed/a", "mixed/a/b"):
        (tmp_path / folder).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / folder / "x.jpg")
    with pytest.raises(DataError, match="mixed/a holds both images and the class folder a/b"):
        find_class_folders(tmp_path / "mixed")
    for folder in ("twice/upper/polyps", "twice/lower/polyps"):
        (tmp_path / folder).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / folder / "x.jpg")
    with pytest.raises(DataError, match="Two class folders are named 'polyps'"):
        find_class_folders(tmp_path / "twice")


def test_an_official_split_maps_names_and_reports_rows_without_files_and_files_without_rows(hk, tmp_path):
    _, root = hk
    data = tmp_path / "labeled-images"
    shutil.copytree(root, data)
    extra = "lower-gi-tract/pathological-findings/polyps/not-in-the-split.jpg"
    shutil.copy(next((data / "lower-gi-tract/pathological-findings/polyps").iterdir()), data / extra)
    items = scan_image_folder(data)
    rows, official = apply_official_split(items, "hyper-kvasir-2fold", 0, {p: i for i, (p, _) in enumerate(items)})
    assert official.name_mapping["polyp"] == ["polyps"] and official.name_mapping["hemorroids"] == ["hemorrhoids"]
    assert official.name_mapping["oesophagitis-a"] == ["esophagitis-a"]
    assert official.files_without_row == [extra]
    assert sum(official.rows_without_file.values()) == 10662 - len(rows) == 10662 - (len(items) - 1)
    text = "\n".join(official.lines())
    assert "polyp -> polyps" in text and "not-in-the-split.jpg" in text and "have no file" in text
    table = read_official_split(OFFICIAL_SPLITS["hyper-kvasir-2fold"][0])
    assert {r["path"] for r in rows if r["split"] == "test"} == {
        r["path"] for r in rows if table[Path(r["path"]).name][1] == 0
    }  # fold 0 is test, exactly
    assert {r["split"] for r in rows} == {"train", "val", "test"}
    assert all(r["label"] == Path(r["path"]).parent.name for r in rows)  # labels from the folders
    with pytest.raises(DataError, match="--data.fold 2 is not a fold of hyper-kvasir-2fold"):
        apply_official_split(items, "hyper-kvasir-2fold", 2, {p: i for i, (p, _) in enumerate(items)})


def test_the_leak_free_subset_is_the_test_images_without_a_planted_near_duplicate(hk):
    dest, root = hk
    rows, report, _ = check_split(DataConfig(str(root), official_split="hyper-kvasir-2fold", fold=0))
    assert len(report.duplicate_groups) == PLANTED_PAIRS
    leaky = planted_in_test(dest, rows)
    assert len(leaky) == PLANTED_PAIRS  # each planted pair straddles fold 0 and fold 1
    assert leak_free_test(rows) == {r["path"] for r in rows if r["split"] == "test"} - leaky


def test_fit_with_the_shipped_official_split_runs_end_to_end_and_reports_both_test_figures(hk, tmp_path):
    dest, root = hk
    common = ["fit", "--data.data_dir", str(root), "--data.official_split", "hyper-kvasir-2fold", "--data.fold", "1"]
    main([*common, *TINY_FIT, "--trainer.runs_dir", str(tmp_path), "--trainer.run_name", "hk"])
    run = tmp_path / "hk"
    rows = read_csv(run / "split_manifest.csv")
    assert all(r[GROUP] != "" for r in rows)
    expected = {r["path"] for r in rows if r["split"] == "test"} - planted_in_test(dest, rows)
    metrics = json.loads((run / "test" / "metrics.json").read_text())
    assert metrics["leak_free"]["n"] == len(expected) == metrics["n"] - PLANTED_PAIRS
    assert len(metrics["leak_free"]["accuracy_ci"]) == 2
    assert len(read_csv(run / "split_leaks.csv")) == 2 * PLANTED_PAIRS
    report = (run / "test" / "report.md").read_text()
    assert "## Leak-free test images" in report
    assert f"| leak-free: no near-duplicate in train/val | {len(expected)} |" in report
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["data"]["official_split"] == "hyper-kvasir-2fold" and config["data"]["fold"] == 1
    with pytest.raises(DataCheckError, match=f"{PLANTED_PAIRS} near-duplicate groups straddle the split"):
        main([*common, *TINY_FIT, "--data.on_leak", "refuse", "--trainer.runs_dir", str(tmp_path)])


def test_a_manifest_is_checked_like_a_folder(hk, tmp_path, capsys):
    dest, root = hk
    data = tmp_path / "labeled-images"
    shutil.copytree(root, data)
    rows, _, _ = check_split(DataConfig(str(data), official_split="hyper-kvasir-2fold", fold=0))
    write_manifest(tmp_path / "m.csv", [{k: r[k] for k in ("path", "label", "split")} for r in rows])  # no groups
    main(["check", "--data_dir", str(data), "--manifest", str(tmp_path / "m.csv"), "--out", str(tmp_path / "c")])
    out = capsys.readouterr().out
    assert f"{PLANTED_PAIRS} near-duplicate groups straddle the split" in out
    assert len(read_csv(tmp_path / "c" / "split_leaks.csv")) == 2 * PLANTED_PAIRS
    broken = next(r["path"] for r in rows if r["split"] == "test")
    (data / broken).write_bytes(b"not an image")
    with pytest.raises(DataError) as stopped:  # DataCheckError is a DataError; so is a test image failing later
        main(
            ["fit", "--data.data_dir", str(data), "--data.manifest", str(tmp_path / "m.csv"), *TINY_FIT]
            + ["--trainer.runs_dir", str(tmp_path / "runs")]
        )
    assert isinstance(stopped.value, DataCheckError), f"fit did not stop before training: {stopped.value}"
    assert re.search(f"1 val/test images of the split manifest .*{broken}", str(stopped.value)), stopped.value
    assert not list((tmp_path / "runs").rglob("*.ckpt"))  # nothing was trained


def test_cv_runs_the_official_folds(hk, tmp_path):
    _, root = hk
    official = ["--data.data_dir", str(root), "--data.official_split", "hyper-kvasir-2fold"]
    main(["cv", *official, *TINY_FIT, "--trainer.runs_dir", str(tmp_path), "--trainer.run_name", "cv"])
    table = read_official_split(OFFICIAL_SPLITS["hyper-kvasir-2fold"][0])
    for k in (0, 1):
        rows = read_csv(tmp_path / "cv" / f"fold{k}" / "split_manifest.csv")
        assert all((table[Path(r["path"]).name][1] == k) == (r["split"] == "test") for r in rows)
    summary = (tmp_path / "cv" / "cv_summary.md").read_text()
    header = "| fold | test images | Accuracy [95% CI] | macro-F1 [95% CI] | balanced accuracy [95% CI] | leak-free |"
    assert header in summary
    assert yaml.safe_load((tmp_path / "cv" / "fold1" / "config.yaml").read_text())["data"]["fold"] == 1
    fold0 = json.loads((tmp_path / "cv" / "fold0" / "test" / "metrics.json").read_text())
    assert f"| 0 | {fold0['n']} |" in summary and f"{fold0['n'] - PLANTED_PAIRS} images: " in summary


def test_the_model_card_states_the_dataset_and_its_licence():
    metadata = {
        "model_name": "mobileone_s0",
        "class_names": list(HK_CLASSES),
        "input": {"image_size": 64, "interpolation": "bilinear", "mean": [0.5] * 3, "std": [0.5] * 3},
    }
    hyper = {"data": {"data_dir": "/home/me/secret/labeled-images", "official_split": "hyper-kvasir-2fold"}}
    card = card_text(metadata, None, hyper)
    header = yaml.safe_load(card.split("---")[1])
    assert header["license"] == "cc-by-4.0" and header["datasets"] == ["hyper-kvasir"]
    assert "Borgli" in card and "official split hyper-kvasir-2fold, fold 0" in card
    assert "/home/me/secret" not in card and "`labeled-images`" in card
    kvasir = card_text(metadata | {"class_names": ["polyps", "esophagitis"]}, None, {"data": {"data_dir": "/d/k"}})
    assert yaml.safe_load(kvasir.split("---")[1])["license_name"] == "research-only" and "Pogorelov" in kvasir
    other = card_text(metadata | {"class_names": ["cats", "dogs"]}, None, {"data": {"data_dir": "/d/pets"}})
    assert yaml.safe_load(other.split("---")[1])["license_name"] == "unknown"


def test_a_single_leak_free_test_image_is_reported_without_figures():
    rows = [
        {"path": "a.jpg", "label": "x", "split": "train", GROUP: "0"},
        {"path": "b.jpg", "label": "x", "split": "test", GROUP: "0"},
        {"path": "c.jpg", "label": "y", "split": "test", GROUP: "1"},
    ]
    probs, targets = np.array([[0.9, 0.1], [0.2, 0.8]]), np.array([0, 1])
    metrics = {"n": 2}
    clean, section = leak_free_metrics(rows, ["b.jpg", "c.jpg"], probs, targets, ["x", "y"], metrics)
    assert clean == {"n": 1} and "1 leak-free test image, too few for figures" in section
