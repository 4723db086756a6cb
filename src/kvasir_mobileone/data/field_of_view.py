"""The frame around the tissue, measured from the data, and the common field of view (--data.field_of_view).

An endoscopy frame shows tissue inside a black outline (round, octagonal, ...) that also carries text, a position
box and device icons. Sources differ in that outline, so a class that comes mostly from one source can be told by its
frame alone. Per pixel of the network input, and per class, this module measures how often the pixel is

- frame: near-black and connected to the image border (a dark lumen in the middle of the tissue is not frame), or
- overlay: overlay-coloured (a green position box; white or light-grey text and icons),

and derives the common field of view from the training images only: the pixels that are not frame in at least
`quantile` of the training frames of every class, less the overlays that stay put (overlay-coloured far more often
than the class's scattered highlights, by a binomial test). Everything else is blacked out in every image the model
sees (training, evaluation, export, predict, serve), so that every frame has the same outline whatever its source.

The view is stored as a 1-bit PNG at the network input size (white: tissue the model sees; black: blacked out),
`field_of_view.png` in the run and the bundle, and inside the checkpoint's input description as packed bits with
their SHA-256 (images.encode_view). numpy, scipy and Pillow. The frame's own maps and the frame swap: data/frame.py."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from tqdm import tqdm

from kvasir_mobileone.data.folder import DataError
from kvasir_mobileone.images import VIEW_PNG_SEEN, decode_resized, view_sha256
from kvasir_mobileone.io import atomic_path
from kvasir_mobileone.marks import EIGHT_NEIGHBOURS, frame_pixels, large_overlays, overlay_pixels

VIEW_QUANTILE = 0.95  # default: a pixel is in the view when it shows tissue in >= 95% of each class's training frames
MIN_VIEW = 0.25  # a common view covering less of the network input than this is refused


@dataclass(frozen=True)
class FieldOfView:
    """The common field of view: `visible` (HxW bool) and how it was found."""

    visible: np.ndarray
    quantile: float
    per_class: dict[str, int]  # training images per class it was derived from
    notes: tuple[str, ...] = ()  # what the user should know (classes too small for the quantile to mean anything)
    skipped: tuple[tuple[str, str], ...] = ()  # (path, why) of the training images that could not be read
    overlays: str = "fixed"  # fixed: the overlays that stay put are out; any: also every overlay mark like the frame
    levels: tuple[dict, ...] = ()  # with --data.view_quantile auto: each view tried, up to the one chosen

    @property
    def fraction(self) -> float:
        return float(self.visible.mean())

    @property
    def sha256(self) -> str:
        return view_sha256(self.visible)

    def describe(self) -> str:
        size = self.visible.shape[0]
        overlays = (
            "less the overlays that stay put"
            if self.overlays == "fixed"
            else f"less every pixel that an overlay mark (text, box, icon: not a small highlight; with a pixel of blur "
            f"margin) covers in more than {100 * (1 - self.quantile):g}% of some class's frames"
        )
        text = (
            f"common field of view: {100 * self.fraction:.1f}% of the {size} x {size} input, the pixels inside the "
            f"frame in >= {100 * self.quantile:g}% of the training frames of every class, {overlays} "
            f"({sum(self.per_class.values())} training images); the rest is black in every image"
        )
        if self.levels:
            chosen = self.levels[-1]
            text += (
                f"; chosen from the data (--data.view_quantile auto): the first of the views tried, from the widest, "
                f"in which the number of frame and overlay-mark pixels left inside per training image, in all and "
                f"per quarter of the input, does not differ between the classes (a permutation test of "
                f"Kruskal-Wallis, p = {chosen['p_value']:.2g} >= {VIEW_ALPHA:g}; "
                + "; ".join(
                    f"{level['quantile']:g}/{level['overlays']}: {100 * level['fraction']:.1f}%, "
                    f"p = {level['p_value']:.2g}"
                    for level in self.levels
                )
                + ")"
            )
        return text


AUTO = "auto"  # --data.view_quantile auto: the view chosen from the data (view_levels)
STRICT_QUANTILES = (0.95, 0.975, 0.99, 0.995, 1.0)  # the stricter views auto tries, every overlay mark out too
VIEW_ALPHA = 0.05  # auto takes the first view in which the marks left inside pass the test at this level
FEW_FOR_TEST = 20  # training images of a class below which auto's test is said to miss small dependences
PERMUTATIONS = 999  # label permutations of auto's test (its p is at least 1 / 1000)


@dataclass
class FrameCounts:
    """Per class: in how many of its training images each pixel is frame (widened by one pixel of blur margin),
    overlay, and an overlay mark of at least a fringe's square (widened too); and, kept for --data.view_quantile
    auto, each image's frame and overlay marks (packed bits) with its class."""

    frame: np.ndarray  # C x H x W int32
    overlay: np.ndarray
    large: np.ndarray
    counts: np.ndarray  # C
    marks: list[np.ndarray]  # packed HxW bool per image (empty unless kept)
    labels: list[int]

    def hidden_at(self, quantile: float, overlays: str) -> np.ndarray:
        """HxW bool: the pixels a view at `quantile` blacks out: frame in more than floor((1 - quantile) x n) of
        some class's n frames, the fixed overlays (fixed_overlays), and with overlays="any" every overlay mark in
        more than that many; a pixel next to a fixed overlay is out too (the resize blurs it into it)."""
        allowed = np.floor((1 - quantile) * self.counts + 1e-9).astype(np.int32)[:, None, None]
        present = self.counts > 0
        hidden = np.any(self.frame[present] > allowed[present], axis=0)
        fixed = fixed_overlays(self.overlay[present], self.counts[present])
        hidden |= ndimage.binary_dilation(fixed, EIGHT_NEIGHBOURS)
        if overlays == "any":
            hidden |= np.any(self.large[present] > allowed[present], axis=0)
        return hidden

    def left_inside(self, visible: np.ndarray) -> np.ndarray:
        """N x 5 int: per training image, its frame and overlay-mark pixels inside `visible`, in all and in each
        quarter of the input (top left, top right, bottom left, bottom right): how many are left, and where."""
        h, w = visible.shape
        rows, cols = (slice(0, h // 2), slice(h // 2, h)), (slice(0, w // 2), slice(w // 2, w))
        left = np.zeros((len(self.marks), 5), np.int64)
        for i, packed in enumerate(self.marks):  # one image's marks unpacked at a time: memory stays a bit per pixel
            inside = np.unpackbits(packed, count=h * w).reshape(h, w) & visible
            left[i] = [np.count_nonzero(inside), *(np.count_nonzero(inside[r, c]) for r in rows for c in cols)]
        return left

    def dependence(self, visible: np.ndarray) -> float:
        """p of the test that the frame and overlay-mark pixels left inside `visible` do not depend on the class:
        their number per training image, in all and in each quarter of the input (marks of one size that sit in
        class-specific places), as one test (class_dependence)."""
        return class_dependence(self.left_inside(visible), np.array(self.labels))


def class_dependence(counts: np.ndarray, labels: np.ndarray, permutations: int = PERMUTATIONS) -> float:
    """Permutation p of the largest Kruskal-Wallis H (tie-corrected) over the columns of `counts` (N x m) with the
    class `labels` (N): whether any column depends on the class, as one test whatever the columns' correlation and
    ties (each column's ranks stay fixed; the labels are permuted, seeded). 1.0 with one class or no column that
    varies."""
    from scipy.stats import rankdata, tiecorrect

    classes, codes = np.unique(labels, return_inverse=True)
    varying = counts[:, np.ptp(counts, axis=0) > 0]
    if len(classes) < 2 or varying.shape[1] == 0:
        return 1.0
    n, sizes = len(codes), np.bincount(codes)[:, None]
    ranks = rankdata(varying, axis=0)
    ties = np.array([tiecorrect(column) for column in ranks.T])

    def largest_h(assigned: np.ndarray) -> float:  # the class codes, as given or permuted
        sums = np.stack([np.bincount(assigned, weights=col, minlength=len(classes)) for col in ranks.T], axis=1)
        h = 12 / (n * (n + 1)) * np.sum(sums**2 / sizes, axis=0) - 3 * (n + 1)
        return float(np.max(h / ties))

    observed, rng = largest_h(codes), np.random.default_rng(0)
    exceed = sum(largest_h(rng.permutation(codes)) >= observed * (1 - 1e-9) for _ in range(permutations))
    return (1 + exceed) / (1 + permutations)


def count_frames(pairs, n_classes: int, keep_marks: bool = False) -> FrameCounts | None:
    """The FrameCounts of (HWC uint8 image, class index) pairs, taken one at a time (None for none); the overlay
    marks' counts and each image's marks (packed bits) only with `keep_marks` (zeros and empty without)."""
    found = None
    for image, label in pairs:
        if found is None:
            zeros = np.zeros((n_classes, *image.shape[:2]), np.int32)
            found = FrameCounts(zeros, zeros.copy(), zeros.copy(), np.zeros(n_classes, np.int64), [], [])
        frame = frame_pixels(image)
        overlay = overlay_pixels(image) & ~frame
        # one pixel more all round: the resize blurs each outline into the pixels next to it
        found.frame[label] += ndimage.binary_dilation(frame, EIGHT_NEIGHBOURS)
        found.overlay[label] += overlay
        found.counts[label] += 1
        if keep_marks:  # only --data.view_quantile auto reads the overlay marks and each image's marks
            large = large_overlays(overlay, frame)
            found.large[label] += ndimage.binary_dilation(large, EIGHT_NEIGHBOURS)
            found.marks.append(np.packbits(frame | large))
            found.labels.append(int(label))
    return found


def common_view(
    images,
    labels,
    class_names: list[str],
    quantile: float | str = VIEW_QUANTILE,
    min_view: float = MIN_VIEW,
) -> FieldOfView:
    """The pixels that are not frame in at least `quantile` of every class's frames (uint8 HWC `images` with their
    class indices `labels`: training images only), less the fixed overlays (fixed_overlays); a pixel next to either
    is out too, since resizing blurs an outline into it. A class of n frames may have floor((1 - quantile) x n)
    frames with frame at a pixel that stays in the view. `quantile` "auto": chosen from the data (view_levels).
    Refused (DataError, with the numbers) when the view covers less than `min_view`."""
    return view_of(zip(images, labels, strict=True), class_names, quantile, min_view)


def view_of(
    pairs, class_names: list[str], quantile: float | str = VIEW_QUANTILE, min_view: float = MIN_VIEW
) -> FieldOfView:
    """common_view of (image, class index) pairs taken one at a time (memory stays that of one image, and with
    "auto" a bit per pixel of each)."""
    auto = quantile == AUTO
    if not auto and not (isinstance(quantile, int | float) and 0 < quantile <= 1):
        raise DataError(f"--data.view_quantile {quantile}: give a share in (0, 1], e.g. 0.95, or auto.")
    found = count_frames(pairs, len(class_names), keep_marks=auto)
    if found is None:
        raise DataError("No readable training image to derive the field of view from.")
    per_class = dict(zip(class_names, found.counts.tolist(), strict=True))
    if auto:
        quantile, overlays, visible, levels = view_levels(found, class_names, min_view)
    else:
        overlays, visible, levels = "fixed", ~found.hidden_at(quantile, "fixed"), ()
    notes = small_class_notes(found.counts, class_names, quantile, auto)
    view = FieldOfView(visible, quantile, per_class, notes, overlays=overlays, levels=levels)
    if view.fraction < min_view:
        raise DataError(
            f"The common field of view covers {100 * view.fraction:.1f}% of the network input, below "
            f"{100 * min_view:.0f}%: the classes' frames share too little (mean area inside the frame per class: "
            f"{inside_shares(found, class_names)}). Look at the frame maps (`kvasir eda`), leave the odd frames out "
            f"(--data.exclude), or lower --data.view_quantile (now {quantile:g})."
        )
    return view


class ViewTooSmall(DataError):
    """Even the widest view --data.view_quantile auto tries covers too little of the input."""


def view_levels(found: FrameCounts, class_names: list[str], min_view: float):
    """--data.view_quantile auto: (quantile, overlays, visible, levels tried) of the widest view, of the default one
    and then STRICT_QUANTILES with every overlay mark out too, in which the frame and overlay-mark pixels left
    inside per training image do not depend on the class (FrameCounts.dependence, p >= VIEW_ALPHA). Refused
    (DataError, with each view tried) when none of at least `min_view` of the input passes."""
    levels = []
    for quantile, overlays in [(VIEW_QUANTILE, "fixed"), *((q, "any") for q in STRICT_QUANTILES)]:
        visible = ~found.hidden_at(quantile, overlays)
        if visible.mean() < min_view:
            if not levels:
                raise ViewTooSmall(
                    f"--data.view_quantile auto: the widest view it tries, the default one (quantile "
                    f"{VIEW_QUANTILE:g}), covers {100 * visible.mean():.1f}% of the network input, below "
                    f"{100 * min_view:.0f}% (mean area inside the frame per class: "
                    f"{inside_shares(found, class_names)}). Give a lower --data.view_quantile (e.g. 0.9), leave "
                    "the odd frames out (--data.exclude), or train without a view and with --data.clean_frame "
                    "inpaint (--data.field_of_view full)."
                )
            break
        p_value = found.dependence(visible)
        levels.append(
            {"quantile": quantile, "overlays": overlays, "fraction": float(visible.mean()), "p_value": p_value}
        )
        if p_value >= VIEW_ALPHA:
            return quantile, overlays, visible, tuple(levels)
    tried = "; ".join(
        f"quantile {lv['quantile']:g}, overlays {lv['overlays']}: {100 * lv['fraction']:.1f}% of the input, "
        f"p = {lv['p_value']:.2g}"
        for lv in levels
    )
    raise DataError(
        f"--data.view_quantile auto: no view covering at least {100 * min_view:.0f}% of the network input leaves "
        f"frame and overlay pixels inside that do not depend on the class ({sum(found.counts)} training images; "
        f"{tried}). The frame tells the class wherever the model could look in these views: train with a numeric "
        f"--data.view_quantile (e.g. {VIEW_QUANTILE:g}) and --data.clean_frame inpaint instead."
    )


def small_class_notes(counts: np.ndarray, class_names: list[str], quantile: float, auto: bool) -> tuple[str, ...]:
    """What a user should know of classes too small for the quantile (or auto's test) to mean much."""
    notes = []
    needed = math.ceil(1 / (1 - quantile) - 1e-9) if quantile < 1 else None  # frames for one to be allowed off
    strict = [f"{c} ({n})" for c, n in zip(class_names, counts, strict=True) if needed and 0 < n < needed]
    if strict:
        notes.append(
            f"Classes with fewer than {needed} training images ({', '.join(strict)}): for them the "
            f"{100 * quantile:g}% quantile means every frame, so one odd frame narrows the view."
        )
    few = [f"{c} ({n})" for c, n in zip(class_names, counts, strict=True) if auto and 0 < n < FEW_FOR_TEST]
    if few:
        notes.append(
            f"--data.view_quantile auto chose the view by a test over the training images; with fewer than "
            f"{FEW_FOR_TEST} in a class ({', '.join(few)}) it can miss a dependence that is left: audit the run."
        )
    return tuple(notes)


def inside_shares(found: FrameCounts, class_names: list[str]) -> str:
    """The mean share of the input inside the frame, per class with images."""
    shares = found.frame / np.maximum(found.counts, 1)[:, None, None]
    return ", ".join(
        f"{c} {100 * (1 - m.mean()):.0f}%" for c, m, n in zip(class_names, shares, found.counts, strict=True) if n
    )


def fixed_overlays(overlay_count: np.ndarray, counts: np.ndarray, alpha: float = 0.05) -> np.ndarray:
    """HxW bool: pixels overlay-coloured in more of some class's frames than chance allows. Per class, a pixel's
    count is tested against the class's overall rate of overlay-coloured pixels (one-sided binomial, Bonferroni over
    the pixels): text, boxes and icons stay put and pass; highlights and white spots of tissue are scattered and
    do not. `overlay_count`: C x H x W counts; `counts`: frames per class."""
    from scipy.stats import binom

    pixels = overlay_count.shape[1] * overlay_count.shape[2]
    fixed = np.zeros(overlay_count.shape[1:], bool)
    for count, n in zip(overlay_count, counts, strict=True):
        rate = count.sum() / (n * pixels)
        if n == 0 or rate == 0:
            continue
        fixed |= (count > 0) & (binom.sf(count - 1, n, rate) < alpha / pixels)
    return fixed


def derive_view(
    rows: list[dict[str, str]], data_dir: str | Path, size: int, interpolation: str, quantile: float | str
) -> FieldOfView:
    """The common field of view of a split's training images (rows whose split is train; never val or test)."""
    train = [r for r in rows if r["split"] == "train"]
    names = sorted({r["label"] for r in rows})

    skipped: list[tuple[str, str]] = []

    def readable():  # one image at a time; an unreadable one is left out and named, as training skips and reports it
        for row in tqdm(train, desc="field of view", unit="img"):
            try:
                image = decode_resized(Path(data_dir) / row["path"], size, interpolation)
            except Exception as err:
                skipped.append((row["path"], f"{type(err).__name__}: {err}"))
                continue
            yield image, names.index(row["label"])

    return replace(view_of(readable(), names, quantile), skipped=tuple(skipped))


def write_view_png(path: str | Path, visible: np.ndarray) -> Path:
    """A 1-bit PNG at the network input size: white where the model sees the image, black where it is blacked out."""
    with atomic_path(path) as tmp:
        Image.fromarray(visible).convert("1").save(tmp, format="PNG")
    return Path(path)


def read_view_png(path: str | Path, size: int) -> np.ndarray:
    """A field-of-view PNG (white: seen) as HxW bool; it must be size x size, the network input."""
    try:
        with Image.open(path) as image:
            visible = np.asarray(image.convert("L")) >= VIEW_PNG_SEEN
    except (OSError, ValueError) as err:
        raise DataError(f"Cannot read the field-of-view mask {path}: {err}. Give a PNG (white: seen).") from err
    if visible.shape != (size, size):
        raise DataError(
            f"The field-of-view mask {path} is {visible.shape[1]} x {visible.shape[0]} px; the network input is "
            f"{size} x {size}: derive it again (--data.field_of_view common) or use --data.image_size "
            f"{visible.shape[0]}."
        )
    if not visible.any():
        raise DataError(f"The field-of-view mask {path} is all black: the model would see nothing.")
    return visible


def field_of_view_for(
    setting: str, rows, data_dir, image_size: int, interpolation: str, quantile, recorded: Path | None = None
) -> tuple[np.ndarray, FieldOfView | None]:
    """--data.field_of_view's policy, in one place: (the pixels the model sees, the view derived from the data or
    None). `recorded`: a resumed run's own field_of_view.png, which wins; "common": derived from the training images
    at --data.view_quantile; a path: that PNG. ("full" needs no view: fit never asks.)"""
    if recorded is not None:
        return read_view_png(recorded, image_size), None
    if setting == "common":
        view = derive_view(rows, data_dir, image_size, interpolation, quantile)
        return view.visible, view
    return read_view_png(setting, image_size), None
