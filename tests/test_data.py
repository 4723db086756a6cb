from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from kvasir_mobileone.data import (
    DataError,
    Normalization,
    build_transforms,
    make_split,
    read_manifest,
    scan_image_folder,
    split_counts,
    write_manifest,
)
from kvasir_mobileone.synth import KVASIR_CLASSES, KVASIR_RESOLUTIONS, synth

ITEMS = [(f"{c}/{i}.jpg", c) for c in "abcd" for i in range(50)]


def test_split_is_stratified_disjoint_and_complete():
    rows = make_split(ITEMS, 0.1, 0.1, seed=3)
    assert sorted(r["path"] for r in rows) == sorted(p for p, _ in ITEMS)
    counts = split_counts(rows)
    assert all(counts["train"][c] == 40 and counts["val"][c] == 5 and counts["test"][c] == 5 for c in "abcd")


def test_split_is_reproducible_and_seed_dependent():
    assert make_split(ITEMS, seed=7) == make_split(ITEMS, seed=7)
    test_a = {r["path"] for r in make_split(ITEMS, seed=7) if r["split"] == "test"}
    test_b = {r["path"] for r in make_split(ITEMS, seed=8) if r["split"] == "test"}
    assert test_a != test_b


def test_manifest_round_trip(tmp_path, tiny_data):
    rows = make_split(scan_image_folder(tiny_data), seed=1)
    write_manifest(tmp_path / "m.csv", rows)
    assert read_manifest(tmp_path / "m.csv") == rows


def test_duplicate_groups_stay_in_one_split():
    groups = {p: i // 5 for i, (p, _) in enumerate(ITEMS)}  # 40 groups of 5 copies, 10 per class
    rows = make_split(ITEMS, 0.1, 0.1, seed=0, groups=groups)
    split_of_group: dict[int, set] = {}
    for r in rows:
        split_of_group.setdefault(groups[r["path"]], set()).add(r["split"])
    assert all(len(s) == 1 for s in split_of_group.values())
    assert Counter(r["split"] for r in rows) == {"train": 160, "val": 20, "test": 20}


def test_too_small_class_is_a_clear_error():
    with pytest.raises(DataError, match="class 'z' has only 2"):
        make_split(ITEMS + [("z/1.jpg", "z"), ("z/2.jpg", "z")], seed=0)


def test_scan_ignores_hidden_and_non_images(tmp_path):
    (tmp_path / "a").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "a" / "x.jpg")
    (tmp_path / "a" / ".DS_Store").write_bytes(b"junk")
    (tmp_path / "a" / "notes.txt").write_text("hi")
    (tmp_path / "__MACOSX").mkdir()
    assert scan_image_folder(tmp_path) == [("a/x.jpg", "a")]


@pytest.mark.parametrize("make", [lambda p: p / "missing", lambda p: p])
def test_scan_errors_say_what_to_do(tmp_path, make):
    with pytest.raises(DataError, match="kvasir synth|class"):
        scan_image_folder(make(tmp_path))


def test_read_manifest_rejects_other_csv(tmp_path):
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="not a split manifest"):
        read_manifest(tmp_path / "x.csv")


NORM = Normalization(image_size=32, mean=(0.5, 0.4, 0.3), std=(0.2, 0.2, 0.2))


def test_eval_transform_resizes_and_normalizes():
    image = Image.new("RGB", (80, 60), (128, 102, 77))
    x = build_transforms(NORM, train=False)(image)
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    expected = (torch.tensor([128, 102, 77]) / 255 - torch.tensor(NORM.mean)) / torch.tensor(NORM.std)
    assert torch.allclose(x.mean(dim=(1, 2)), expected, atol=1e-2)


def test_train_transform_augments():
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8))
    transform = build_transforms(NORM, train=True)
    torch.manual_seed(0)
    a, b = transform(image), transform(image)
    assert a.shape == b.shape == (3, 32, 32) and not torch.allclose(a, b)


def test_synth_uses_kvasir_classes_and_resolutions(tmp_path):
    synth(str(tmp_path), images_per_class=1, seed=0)
    items = scan_image_folder(tmp_path)
    assert Counter(c for _, c in items) == {c: 1 for c in KVASIR_CLASSES}
    for rel, _ in items:
        with Image.open(tmp_path / rel) as image:
            assert image.format == "JPEG" and image.size in KVASIR_RESOLUTIONS
