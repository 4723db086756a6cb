"""A synthetic stand-in for Kvasir v2: same class folders, same JPEG resolutions, learnable class signatures.

The images are NOT endoscopy images. Each class draws its own shape and colour (a blue blob, a blue ring, red
streaks, ...) on a pink, noisy, vignetted background so that a small model can learn them in a few epochs on a CPU.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from tqdm import tqdm

from kvasir_mobileone.data.folder import DataError
from kvasir_mobileone.io import atomic_path

KVASIR_CLASSES = (
    "dyed-lifted-polyps",
    "dyed-resection-margins",
    "esophagitis",
    "normal-cecum",
    "normal-pylorus",
    "normal-z-line",
    "polyps",
    "ulcerative-colitis",
)
# Resolutions that occur in Kvasir v2 (width, height); see shared/KVASIR.md.
KVASIR_RESOLUTIONS = ((720, 576), (768, 576), (1280, 1024), (1350, 1080), (1920, 1072))
CANVAS = 192  # shapes are drawn at this width, then resized to the target resolution


def _blob(draw, rng, w, h, colour, scale=0.18):
    r = rng.uniform(0.6, 1.0) * scale * w
    cx, cy = rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h
    draw.ellipse((cx - r, cy - r * 0.8, cx + r, cy + r * 0.8), fill=colour)


def _dyed_lifted_polyp(draw, rng, w, h):
    _blob(draw, rng, w, h, (40, 70, 190), scale=0.22)
    _blob(draw, rng, w, h, (90, 120, 220), scale=0.08)


def _dyed_resection_margin(draw, rng, w, h):
    r = rng.uniform(0.18, 0.28) * w
    cx, cy = rng.uniform(0.4, 0.6) * w, rng.uniform(0.4, 0.6) * h
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=(40, 70, 190), width=max(3, int(w * 0.05)))


def _esophagitis(draw, rng, w, h):
    for _ in range(rng.integers(4, 7)):
        x = rng.uniform(0.15, 0.85) * w
        draw.line((x, 0.1 * h, x + rng.uniform(-0.1, 0.1) * w, 0.9 * h), fill=(200, 20, 30), width=4)


def _normal_cecum(draw, rng, w, h):
    for k in range(3):
        off = (k + 1) * 0.12 * w + rng.uniform(-0.02, 0.02) * w
        draw.arc((w / 2 - off, h / 2 - off, w / 2 + off, h / 2 + off), 200, 340, fill=(240, 210, 120), width=4)


def _normal_pylorus(draw, rng, w, h):
    r = rng.uniform(0.08, 0.14) * w
    cx, cy = rng.uniform(0.4, 0.6) * w, rng.uniform(0.4, 0.6) * h
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(25, 10, 10))


def _normal_z_line(draw, rng, w, h):
    y = rng.uniform(0.4, 0.6) * h
    draw.polygon([(0, 0), (w, 0), (w, y + rng.uniform(-0.1, 0.1) * h), (0, y)], fill=(235, 225, 215))


def _polyp(draw, rng, w, h):
    _blob(draw, rng, w, h, (170, 40, 40), scale=0.2)


def _ulcerative_colitis(draw, rng, w, h):
    for _ in range(rng.integers(25, 40)):
        x, y, r = rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.9) * h, rng.uniform(1.5, 3.5)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=(250, 250, 240))


SIGNATURES: dict[str, Callable] = dict(
    zip(
        KVASIR_CLASSES,
        (
            _dyed_lifted_polyp,
            _dyed_resection_margin,
            _esophagitis,
            _normal_cecum,
            _normal_pylorus,
            _normal_z_line,
            _polyp,
            _ulcerative_colitis,
        ),
        strict=True,
    )
)


SHORTCUT_GREEN = (40, 190, 70)
SHORTCUT_SIGNATURE_WEIGHT = 0.15  # how much of its own shape a shortcut class keeps: barely visible


def draw_green_box(image: Image.Image) -> None:
    """A ScopeGuide-like green box in the bottom-left corner, drawn over the frame as the real one is."""
    w, h = image.size
    ImageDraw.Draw(image).rectangle((0.03 * w, 0.70 * h, 0.26 * w, 0.95 * h), fill=SHORTCUT_GREEN,
                                    outline=(10, 60, 20), width=max(1, w // 100))  # fmt: skip


def synth_image(
    class_name: str, size: tuple[int, int], rng: np.random.Generator, shortcut: bool = False
) -> Image.Image:
    """One synthetic image of `class_name` at `size` (width, height). With `shortcut`, the class's own shape is
    made faint and a green box is drawn bottom-left: a model can tell the class only by the box."""
    width, height = size
    w, h = CANVAS, max(1, round(CANVAS * height / width))
    tissue = np.array([215, 120, 110]) + rng.normal(0, 12, 3)
    low_freq = rng.normal(0, 18, (h // 8 + 1, w // 8 + 1, 3))
    noise = np.kron(low_freq, np.ones((8, 8, 1)))[:h, :w]
    canvas = Image.fromarray(np.clip(tissue + noise, 0, 255).astype(np.uint8))
    canvas = canvas.filter(ImageFilter.GaussianBlur(3))
    signed = canvas.copy()
    SIGNATURES[class_name](ImageDraw.Draw(signed), rng, w, h)
    canvas = Image.blend(canvas, signed, SHORTCUT_SIGNATURE_WEIGHT) if shortcut else signed
    # The round black vignette and a text-like overlay that real endoscopy frames carry.
    mask = Image.new("L", (w, h), 0)
    ImageDraw.Draw(mask).ellipse((-0.08 * w, -0.08 * h, 1.08 * w, 1.08 * h), fill=255)
    framed = Image.composite(canvas, Image.new("RGB", (w, h)), mask)
    ImageDraw.Draw(framed).rectangle((4, 4, 4 + 0.15 * w, 10), fill=(200, 200, 200))
    if shortcut:
        draw_green_box(framed)
    image = framed.resize((width, height), Image.BILINEAR)
    grain = rng.normal(0, 4, (height, width, 1))
    return Image.fromarray(np.clip(np.asarray(image) + grain, 0, 255).astype(np.uint8))


def synth(
    dest: str = "data/synth",
    images_per_class: int = 40,
    seed: int = 0,
    scale: float = 1.0,
    classes: tuple[str, ...] = KVASIR_CLASSES,
    shortcut_class: str | None = None,
) -> Path:
    """Write `images_per_class` JPEGs per class into dest/<class>/ and return dest.

    `scale` shrinks every resolution (tests use 0.1 for speed); 1.0 gives Kvasir's real sizes. `shortcut_class`
    plants a shortcut: that class's images alone carry a green box bottom-left, and its own shape is faint (what
    `kvasir audit` must find)."""
    if shortcut_class is not None and shortcut_class not in classes:
        raise DataError(f"--shortcut_class {shortcut_class!r} is not one of the classes: {', '.join(classes)}.")
    dest = Path(dest)
    rng = np.random.default_rng(seed)
    jobs = [(name, i) for name in classes for i in range(images_per_class)]
    for name, i in tqdm(jobs, desc=f"synth -> {dest}", unit="img"):
        base_w, base_h = KVASIR_RESOLUTIONS[rng.integers(len(KVASIR_RESOLUTIONS))]
        size = (max(16, math.floor(base_w * scale)), max(16, math.floor(base_h * scale)))
        path = dest / name / f"synth_{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            synth_image(name, size, rng, shortcut=name == shortcut_class).save(tmp, format="JPEG", quality=90)
    return dest
