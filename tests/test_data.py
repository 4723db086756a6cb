import os
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from kvasir_mobileone.cache import build_cache, is_fresh
from kvasir_mobileone.data import (
    DataError,
    ImageListDataset,
    Normalization,
    class_names_of,
    device_augmentations,
    make_split,
    normalize,
    read_manifest,
    scan_image_folder,
    split_counts,
    train_augmentations,
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


def test_normalize_uses_the_backbone_mean_and_std():
    batch = torch.tensor([128, 102, 77], dtype=torch.uint8).view(1, 3, 1, 1).expand(2, 3, 4, 4)
    x = normalize(batch, NORM)
    expected = (torch.tensor([128, 102, 77]) / 255 - torch.tensor(NORM.mean)) / torch.tensor(NORM.std)
    assert x.dtype == torch.float32 and torch.allclose(x[0, :, 0, 0], expected, atol=1e-6)


def test_worker_augmentations_change_uint8_images():
    rng = np.random.default_rng(0)
    image = torch.from_numpy(rng.integers(0, 255, (3, 32, 32), dtype=np.uint8))
    torch.manual_seed(0)
    a, b = train_augmentations()(image), train_augmentations()(image)
    assert a.shape == b.shape == (3, 32, 32) and a.dtype == torch.uint8 and not torch.equal(a, b)


def test_device_augmentations_are_random_per_image():
    batch = torch.rand(1, 3, 32, 32).expand(4, 3, 32, 32).contiguous()
    out = device_augmentations()(batch)
    assert out.shape == batch.shape and not torch.allclose(out[0], out[1])


def test_cached_and_uncached_pipelines_feed_the_same_pixels(tiny_data, tmp_path):
    rows = make_split(scan_image_folder(tiny_data), seed=1)
    names = class_names_of(rows)
    cache = build_cache(tiny_data, [r["path"] for r in rows], 32, cache_dir=tmp_path / "cache", workers=1)
    cached = ImageListDataset(rows, tiny_data, names, 32, cache=cache)
    uncached = ImageListDataset(rows, tiny_data, names, 32)
    for i in (0, 7, len(rows) - 1):
        a, b = cached[i][0].int(), uncached[i][0].int()
        assert a.shape == (3, 32, 32) and (a - b).abs().max() <= 1 and a.float().std() > 5


def test_stale_cache_is_detected_and_rebuilt(tmp_path):
    for name, colour in (("a", (255, 0, 0)), ("b", (0, 0, 255))):
        (tmp_path / "data" / name).mkdir(parents=True)
        Image.new("RGB", (64, 48), colour).save(tmp_path / "data" / name / "x.png")
    data, paths = tmp_path / "data", ["a/x.png", "b/x.png"]
    cache = build_cache(data, paths, 16, workers=1)
    assert cache.get("a/x.png")[0, 0].tolist() == [255, 0, 0]
    assert is_fresh(data, paths, data / ".kvasir_cache", 16, "bilinear")
    Image.new("RGB", (64, 48), (0, 255, 0)).save(data / "a" / "x.png")
    os.utime(data / "a" / "x.png", ns=(1, 1))  # a different modification time, whatever the clock's resolution
    assert not is_fresh(data, paths, data / ".kvasir_cache", 16, "bilinear")
    assert build_cache(data, paths, 16, workers=1).get("a/x.png")[0, 0].tolist() == [0, 255, 0]


def test_synth_uses_kvasir_classes_and_resolutions(tmp_path):
    synth(str(tmp_path), images_per_class=1, seed=0)
    items = scan_image_folder(tmp_path)
    assert Counter(c for _, c in items) == {c: 1 for c in KVASIR_CLASSES}
    for rel, _ in items:
        with Image.open(tmp_path / rel) as image:
            assert image.format == "JPEG" and image.size in KVASIR_RESOLUTIONS
