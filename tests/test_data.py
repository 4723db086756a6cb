import os
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from kvasir_mobileone.data.cache import build_cache, is_fresh
from kvasir_mobileone.data.datamodule import ImageListDataset
from kvasir_mobileone.data.folder import DataError, scan_image_folder
from kvasir_mobileone.data.split import class_names_of, make_split, read_manifest, split_counts, write_manifest
from kvasir_mobileone.data.synth import KVASIR_CLASSES, KVASIR_RESOLUTIONS, synth
from kvasir_mobileone.data.transforms import device_augmentations, normalize, train_augmentations
from kvasir_mobileone.images import ModelInput

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


def test_a_class_too_small_to_stratify_trains_only_and_the_rest_is_split_as_asked():
    """Two images cannot give a val and a test image: the split is drawn class by class, the class trains only (fit
    then reports it missing from val/test); a zero test fraction is still an error."""
    rows = make_split(ITEMS + [("z/1.jpg", "z"), ("z/2.jpg", "z")], seed=0)
    assert {r["split"] for r in rows if r["label"] == "z"} == {"train"}
    assert {r["split"] for r in rows if r["label"] != "z"} == {"train", "val", "test"}
    with pytest.raises(DataError, match="above 0 and below 1"):
        make_split(ITEMS, 0.1, 0.0, seed=0)


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


NORM = ModelInput(image_size=32, mean=(0.5, 0.4, 0.3), std=(0.2, 0.2, 0.2))


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


def test_cached_and_uncached_pipelines_feed_the_same_pixels(tiny_data, tmp_path, monkeypatch):
    import kvasir_mobileone.data.datamodule as dataset

    rows = make_split(scan_image_folder(tiny_data), seed=1)
    names = class_names_of(rows)
    cache = build_cache(tiny_data, [r["path"] for r in rows], 32, cache_dir=tmp_path / "cache", workers=1)
    assert not cache.errors
    cached = ImageListDataset(rows, tiny_data, names, 32, cache=cache)
    uncached = ImageListDataset(rows, tiny_data, names, 32)
    decoded = []
    decode = dataset.decode_resized
    monkeypatch.setattr(dataset, "decode_resized", lambda path, *a, **k: decoded.append(path) or decode(path, *a, **k))
    for i in (0, 7, len(rows) - 1):
        a = cached[i][0].int()
        assert decoded == [], "a cached image was decoded again"
        b = uncached[i][0].int()
        assert len(decoded) == 1, "the uncached dataset did not decode the file"
        decoded.clear()
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


def test_a_failed_cache_fill_is_recorded_with_its_reason(tmp_path):
    for name in ("a", "b"):
        (tmp_path / "data" / name).mkdir(parents=True)
        Image.new("RGB", (40, 30), (200, 10, 10)).save(tmp_path / "data" / name / "x.png")
    (tmp_path / "data" / "b" / "bad.png").write_bytes(b"not a png")
    cache = build_cache(tmp_path / "data", ["a/x.png", "b/x.png", "b/bad.png"], 16, workers=1)
    assert list(cache.errors) == ["b/bad.png"] and "UnidentifiedImageError" in cache.errors["b/bad.png"]
    assert cache.get("b/bad.png") is None and cache.get("a/x.png") is not None


def test_a_file_changed_while_the_cache_is_built_makes_it_stale(tmp_path, monkeypatch):
    from kvasir_mobileone.data import cache as cache_module

    (tmp_path / "data" / "a").mkdir(parents=True)
    Image.new("RGB", (40, 30), (200, 10, 10)).save(tmp_path / "data" / "a" / "x.png")
    decode = cache_module.decode_resized

    def decode_then_change(path, *args):
        pixels = decode(path, *args)
        os.utime(path, ns=(1, 1))  # the file changes on disk after it was read
        return pixels

    monkeypatch.setattr(cache_module, "decode_resized", decode_then_change)
    build_cache(tmp_path / "data", ["a/x.png"], 16, workers=1)
    assert not is_fresh(tmp_path / "data", ["a/x.png"], tmp_path / "data" / ".kvasir_cache", 16, "bilinear")


def test_flat_images_are_not_chained_into_one_duplicate_group(tmp_path):
    from kvasir_mobileone.data.check import check_folder

    for label, colours in (("a", [(0, 0, 0), (255, 255, 255), (200, 30, 30), (30, 200, 30)]), ("b", [(30, 30, 200)])):
        (tmp_path / label).mkdir()
        for i, colour in enumerate(colours):
            Image.new("RGB", (64, 64), colour).save(tmp_path / label / f"flat{i}.png")
    Image.new("RGB", (64, 64), (0, 0, 0)).save(tmp_path / "b" / "copy_of_black.png")  # byte-identical to a/flat0
    groups = check_folder(tmp_path).duplicate_groups
    assert groups == [["a/flat0.png", "b/copy_of_black.png"]]


def test_a_mixed_label_group_is_stratified_by_its_majority_label():
    from kvasir_mobileone.data.split import group_labels

    items = [("1.jpg", "b"), ("2.jpg", "a"), ("3.jpg", "a"), ("4.jpg", "c")]
    assert group_labels(items, {"1.jpg": 0, "2.jpg": 0, "3.jpg": 0, "4.jpg": 1}) == {0: "a", 1: "c"}


def test_transparency_is_composited_and_deep_greyscale_scaled_by_its_mode(tmp_path):
    from kvasir_mobileone.images import load_rgb

    Image.new("RGBA", (8, 8), (10, 200, 10, 128)).save(tmp_path / "alpha.png")
    assert tuple(np.asarray(load_rgb(tmp_path / "alpha.png"))[0, 0]) == (5, 100, 5)  # over black, half opacity
    Image.fromarray(np.full((8, 8), 100, np.int32), mode="I").save(tmp_path / "dark32.tif")
    dark = np.asarray(load_rgb(tmp_path / "dark32.tif"))
    assert dark.max() == 0  # 100 of 65535 is black, not the mid-grey 100 of 255
