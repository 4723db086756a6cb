"""A synthetic stand-in for Kvasir v2 and HyperKvasir: the same class folders (flat, or HyperKvasir's nested
layout with its 23 classes, class sizes and the official split's file names), the same JPEG resolutions, learnable
class signatures, and planted problems: a shortcut box, near-duplicate frames placed across the official split.

The images are NOT endoscopy images. Each class draws its own shape and colour (a blue blob, a blue ring, red
streaks, ...) on a noisy, vignetted background so that a small model can learn them in a few epochs on a CPU.
"""

from __future__ import annotations

import io
import math
from collections import Counter
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image
from tqdm import tqdm

from kvasir_mobileone.data.catalog import HYPER_KVASIR, KVASIR_V2, OFFICIAL_SPLITS
from kvasir_mobileone.data.check import NEAR_DUPLICATE_BITS, inspect_image
from kvasir_mobileone.data.folder import DataError
from kvasir_mobileone.data.official import read_official_split
from kvasir_mobileone.data.synth_draw import KVASIR_CLASSES, KVASIR_RESOLUTIONS, synth_image
from kvasir_mobileone.io import atomic_path, write_csv

# HyperKvasir's folder names as its official split CSV spells them (the CSV's own spellings; see official_splits/)
HYPER_KVASIR_CSV_NAMES = {
    "cecum": "normal-cecum",
    "pylorus": "normal-pylorus",
    "z-line": "normal-z-line",
    "polyps": "polyp",
    "hemorrhoids": "hemorroids",
    "esophagitis-a": "oesophagitis-a",
    "esophagitis-b-d": "oesophagitis-b-d",
    "barretts-short-segment": "short-segment-barretts",
}
PLANTED_FLIPS = "planted_label_flips.csv"  # beside the data: the images synth gave a wrong label on purpose
PLANTED = "planted_near_duplicates.csv"  # what synth planted, for tests to compare with what the tool finds


def near_copy(path: Path, copy: Path) -> Path | None:
    """Write a near-duplicate of the JPEG `path` to `copy`, as a video's next frame is: the same picture, brightened
    by a grey level or encoded again at another quality (other bytes), whose perceptual hash, as `kvasir check`
    computes it, is within NEAR_DUPLICATE_BITS of the original's; the gentlest change that gets there is kept. None
    (and no file) for an image whose hash no such change keeps."""
    original = inspect_image(str(path))["phash"]
    with Image.open(path) as image:
        rgb = image.convert("RGB")
    for shift, quality in ((1, 80), (0, 85), (0, 92), (0, 97), (0, 100)):
        buffer = io.BytesIO()
        Image.eval(rgb, lambda v, s=shift: min(255, v + s)).save(buffer, "JPEG", quality=quality)
        with atomic_path(copy) as tmp:
            tmp.write_bytes(buffer.getvalue())
        if bin(inspect_image(str(copy))["phash"] ^ original).count("1") <= NEAR_DUPLICATE_BITS:
            return copy
    copy.unlink()
    return None


def hyper_kvasir_names(classes: tuple[str, ...], rng: np.random.Generator, split: str):
    """{class: [(file name, fold)]}: every row of the class in the official split, in a seeded order; synth takes
    the first ones it needs and plants near-duplicates under the rest."""
    table = read_official_split(OFFICIAL_SPLITS[split][0])
    by_class: dict[str, list[tuple[str, int]]] = {}
    for name, (csv_class, fold) in sorted(table.items()):
        by_class.setdefault(csv_class, []).append((name, fold))
    chosen = {}
    for c in classes:
        rows = by_class[HYPER_KVASIR_CSV_NAMES.get(c, c)]
        order = rng.permutation(len(rows))
        chosen[c] = [rows[i] for i in order]
    return chosen


def class_sizes(classes: tuple[str, ...], images_per_class: int, sizes: str) -> dict[str, int]:
    """Images per class: `images_per_class` each (equal), or HyperKvasir's proportions with the largest class at
    images_per_class and every class at least 2 (hyper-kvasir)."""
    if sizes == "equal":
        return {c: images_per_class for c in classes}
    real = hyper_kvasir_sizes()
    largest = max(real[c] for c in classes)
    return {c: max(2, round(images_per_class * real[c] / largest)) for c in classes}


def hyper_kvasir_sizes() -> dict[str, int]:
    """Images per HyperKvasir class (folder names), counted in its official split."""
    table = read_official_split(OFFICIAL_SPLITS["hyper-kvasir-2fold"][0])
    per_csv_class = Counter(csv_class for csv_class, _ in table.values())
    return {c: per_csv_class[HYPER_KVASIR_CSV_NAMES.get(c, c)] for c in HYPER_KVASIR.classes}


def synth(
    dest: str = "data/synth",
    images_per_class: int = 40,
    seed: int = 0,
    scale: float = 1.0,
    classes: tuple[str, ...] | None = None,
    shortcut_class: str | None = None,
    layout: Literal["flat", "hyper-kvasir"] = "flat",
    sizes: Literal["equal", "hyper-kvasir"] = "equal",
    near_duplicates: int = 0,
    split: str = "hyper-kvasir-2fold",
    flip_fraction: float = 0.0,
    frames: Literal["same", "per-class", "realistic"] = "same",
    foreign: bool = False,
    video: bool = False,
) -> Path:
    """Write a synthetic endoscopy-like image folder (or examination videos) to test the tool on.

    Write synthetic JPEGs into dest/<class>/ (flat: Kvasir v2's 8 classes) or HyperKvasir's nested layout
    dest/labeled-images/<tract>/<group>/<class>/ with its 23 classes and file names taken from its official split.

    `scale` shrinks every resolution (tests use 0.1 for speed); 1.0 gives Kvasir's real sizes. `sizes hyper-kvasir`
    gives the classes HyperKvasir's proportions (the largest gets images_per_class). `shortcut_class` plants a
    shortcut: that class's images alone carry a green box bottom-left, and its own shape is faint (what `kvasir
    audit` must find). `near_duplicates N` plants N near-copies of written images (video-frame-like: other bytes,
    the same perceptual hash); with the hyper-kvasir layout each copy takes a file name of the other side of the
    official split `split` (fold 0 vs the rest), so the split leaks; all are listed in
    dest/planted_near_duplicates.csv. `flip_fraction` moves that share of the images (chosen at random) into
    another class's folder, a wrong label for what they show, listed in dest/planted_label_flips.csv (path,
    drawn class, given label): what `kvasir label-issues` must find. `frames per-class` gives each class its own
    frame outline (round, octagonal, narrow round, rounded rectangle, in turn) and a small icon at its own height on
    the right edge, as frames from different endoscopes differ: a shortcut in the frame itself (what
    `--data.field_of_view common` removes). `frames realistic` is per-class as real frames are: 4% of each class's
    outlines reach deeper in, every outline's reach varies, the text line and the icon move (the icon's grey level
    and width tell the class): what the common view alone does not remove. `foreign true` writes instead images
    that are not endoscopy into dest (scikit-learn's temple and flower photos, white, black and grey frames,
    noise, crops of the photos: data/foreign.py), to see a model say "outside the training data". `video true`
    writes instead a synthetic examination, dest/examination.mp4 (H.264, 25 fps, 720 x 576 times `scale`): 6 s of
    each of `classes` in order with camera drift, a blurred stretch and a flash, black frames between them, and
    dest/examination_truth.csv (label, start, end in seconds)."""
    if video:
        from kvasir_mobileone.data.synth_video import write_examination

        size = (max(64, round(720 * scale)), max(48, round(576 * scale)))  # Kvasir's most common frame
        mp4, _ = write_examination(
            Path(dest) / "examination.mp4", tuple(classes or KVASIR_CLASSES), synth_image, seed, size
        )
        return mp4.parent
    if foreign:
        from kvasir_mobileone.data.foreign import write_foreign

        write_foreign(dest)
        return Path(dest)
    dataset = HYPER_KVASIR if layout == "hyper-kvasir" else KVASIR_V2
    classes = tuple(classes or dataset.classes)
    unknown = [c for c in classes if layout == "hyper-kvasir" and c not in dataset.classes]
    if unknown:
        raise DataError(f"{unknown} are not HyperKvasir classes: {', '.join(dataset.classes)}.")
    if shortcut_class is not None and shortcut_class not in classes:
        raise DataError(f"--shortcut_class {shortcut_class!r} is not one of the classes: {', '.join(classes)}.")
    dest = Path(dest)
    root = dest / dataset.folder if layout == "hyper-kvasir" else dest
    folder_of = dict(zip(dataset.classes, dataset.paths, strict=True))
    rng = np.random.default_rng(seed)
    counts = class_sizes(classes, images_per_class, sizes)
    names = hyper_kvasir_names(classes, rng, split) if layout == "hyper-kvasir" else None
    written: dict[str, list[tuple[Path, int]]] = {c: [] for c in classes}  # class -> (path, fold)
    jobs = [(name, i) for name in classes for i in range(counts[name])]
    for name, i in tqdm(jobs, desc=f"synth -> {root}", unit="img"):
        base_w, base_h = KVASIR_RESOLUTIONS[rng.integers(len(KVASIR_RESOLUTIONS))]
        size = (max(16, math.floor(base_w * scale)), max(16, math.floor(base_h * scale)))
        if names is not None:
            if i >= len(names[name]):
                continue  # the class has no more images in HyperKvasir
            file_name, fold = names[name][i]
        else:
            file_name, fold = f"synth_{i:05d}.jpg", 0
        path = root / folder_of.get(name, name) / file_name
        path.parent.mkdir(parents=True, exist_ok=True)
        image = synth_image(
            name,
            size,
            rng,
            shortcut=name == shortcut_class,
            classes=classes,
            own_frame=frames in ("per-class", "realistic"),
            realistic=frames == "realistic",
        )
        with atomic_path(path) as tmp:
            image.save(tmp, format="JPEG", quality=90)
        written[name].append((path, fold))
    if near_duplicates:
        plant_near_duplicates(dest, root, written, names, near_duplicates, rng)
    if flip_fraction:
        plant_label_flips(dest, root, written, flip_fraction, rng, folder_of)
    return root


def plant_label_flips(dest: Path, root: Path, written, fraction: float, rng: np.random.Generator, folder_of) -> Path:
    """Move round(fraction x images) written images, chosen at random, into another class's folder (chosen at
    random); listed in dest/planted_label_flips.csv."""
    if not 0 < fraction < 1 or len(written) < 2:
        raise DataError(f"--flip_fraction {fraction}: give a share between 0 and 1, with at least 2 classes.")
    everything = [(c, path) for c in written for path, _ in written[c]]
    flips = []
    for k, pick in enumerate(rng.permutation(len(everything))[: round(fraction * len(everything))]):
        drawn, path = everything[pick]
        others = [c for c in written if c != drawn]
        given = others[rng.integers(len(others))]
        target = root / folder_of.get(given, given) / f"flipped_{k:05d}{path.suffix}"
        path.replace(target)
        flips.append([target.relative_to(root).as_posix(), drawn, given])
    return write_csv(dest / PLANTED_FLIPS, ["path", "drawn_class", "given_label"], flips)


def plant_near_duplicates(dest: Path, root: Path, written, names, count: int, rng: np.random.Generator) -> Path:
    """Near-copies of `count` written images, in the same class folder; with official-split names, under a file
    name of the other side of the split (fold 0 against the others). Listed in dest/planted_near_duplicates.csv."""
    planted = []
    spare = {c: list(names[c][len(written[c]) :]) for c in written} if names is not None else {}
    candidates = [(c, k) for c in written for k in range(len(written[c]))]
    for pick in rng.permutation(len(candidates)):
        if len(planted) == count:
            break
        c, k = candidates[pick]
        original, fold = written[c][k]
        if names is None:
            copy_name = f"synth_dup_{len(planted):05d}.jpg"
        else:
            other = next((n for n, f in spare[c] if (f == 0) != (fold == 0)), None)
            if other is None:
                continue  # no file name of this class left on the other side of the split
            spare[c] = [(n, f) for n, f in spare[c] if n != other]
            copy_name = other
        copy = near_copy(original, original.with_name(copy_name))
        if copy is None:
            continue  # its hash is unstable: another image is planted instead
        planted.append([original.relative_to(root).as_posix(), copy.relative_to(root).as_posix(), c])
    if len(planted) < count:
        raise DataError(f"Could plant only {len(planted)} of {count} near-duplicates: ask for fewer, or more images.")
    return write_csv(dest / PLANTED, ["original", "copy", "class"], planted)
