"""Drawing one synthetic frame: each class's shape and colour on a noisy, vignetted background, at one of Kvasir
v2's resolutions, with the frame outline, overlays and icons that real frames have (per class, or as real frames
vary), and the planted shortcut box. data/synth.py writes the datasets and videos from these. NOT endoscopy images.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from kvasir_mobileone.data.catalog import KVASIR_V2

KVASIR_CLASSES = KVASIR_V2.classes

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
    ImageDraw.Draw(image).rectangle(
        (0.03 * w, 0.70 * h, 0.26 * w, 0.95 * h), fill=SHORTCUT_GREEN, outline=(10, 60, 20), width=max(1, w // 100)
    )


# Classes beyond Kvasir's eight (HyperKvasir's 23) reuse the eight shapes on tissue of another tint.
TISSUE_TINTS = ((215, 120, 110), (190, 160, 90), (150, 120, 185))


def signature_of(class_name: str, classes: tuple[str, ...]) -> tuple[Callable, tuple[int, int, int]]:
    """The shape and tissue tint a class is drawn with: Kvasir's eight have their own; any other class the shape
    and tint of its position among the classes."""
    if class_name in SIGNATURES:
        return SIGNATURES[class_name], TISSUE_TINTS[0]
    k = classes.index(class_name)
    return SIGNATURES[KVASIR_CLASSES[k % 8]], TISSUE_TINTS[(k // 8 + 1) % len(TISSUE_TINTS)]


def draw_outline(mask: Image.Image, outline: int, inset: float = 0.0) -> None:
    """The view's outline on an L mask (255: tissue): 0 round (the default), 1 octagonal, 2 a narrower round,
    3 a rounded rectangle; what sets endoscopes (and so sources) apart. `inset` (a share of the side) draws it that
    much further in on every side: an outline that reaches deeper into the image."""
    w, h = mask.size
    draw = ImageDraw.Draw(mask)

    def box(x0, y0, x1, y1):
        return ((x0 + inset) * w, (y0 + inset) * h, (x1 - inset) * w, (y1 - inset) * h)

    if outline % len(OUTLINES) == 0:
        draw.ellipse(box(-0.08, -0.08, 1.08, 1.08), fill=255)
    elif outline % len(OUTLINES) == 1:
        c = 0.24
        corners = [(c, 0), (1 - c, 0), (1, c), (1, 1 - c), (1 - c, 1), (c, 1), (0, 1 - c), (0, c)]
        draw.polygon(
            [((inset + x * (1 - 2 * inset)) * w, (inset + y * (1 - 2 * inset)) * h) for x, y in corners], fill=255
        )
    elif outline % len(OUTLINES) == 2:
        draw.ellipse(box(0.05, 0.02, 0.95, 0.98), fill=255)
    else:
        draw.rounded_rectangle(box(0.07, 0.07, 0.93, 0.93), radius=0.22 * h, fill=255)


OUTLINES = ("round", "octagonal", "narrow round", "rounded rectangle")
ICON_GREY = (225, 225, 225)


# `--frames realistic`: what real frames from several endoscopes do that one outline per class does not. A share of
# each class's frames (below the 5% a common view's quantile lets through) have an outline reaching deeper in, every
# frame's outline sits a little further in or out, and the overlays move: a text line of any length on any of the
# top rows, and the device's icon — its grey level and width tell the source — anywhere in the right half: it moves
# too much for the common view's overlay test to hide it, so the view alone leaves it where the model looks.
REACH_SHARE, REACH_INSET, OUTLINE_JITTER = 0.04, 0.12, 0.03
REALISTIC_SIGNATURE_WEIGHT = 0.3  # real lesions are harder to read than the synthetic shapes: theirs made fainter


def realistic_overlays(image: Image.Image, k: int, classes: int, rng: np.random.Generator) -> None:
    """The moving overlays of `--frames realistic` on an RGB image: a text line (grey 200, random length and row)
    and class k's icon (its own grey level and width) at a random place in the right half."""
    w, h = image.size
    draw = ImageDraw.Draw(image)
    y = rng.uniform(0.02, 0.16) * h
    draw.rectangle((0.04 * w, y, (0.06 + rng.uniform(0.06, 0.3)) * w, y + 0.04 * h), fill=(200, 200, 200))
    level = round(180 + 75 * k / max(1, classes - 1))  # every level clearly overlay grey (pixels.OVERLAY_GREY)
    side = (0.08 + 0.07 * (k % 3)) * w, 0.12 * h
    x, y = rng.uniform(0.55, 0.92 - side[0] / w) * w, rng.uniform(0.15, 0.85) * h
    draw.rectangle((x, y, x + side[0], y + side[1]), fill=(level, level, level))


def draw_icon(image: Image.Image, position: float) -> None:
    """A small light-grey device icon at the right edge, `position` (0 top, 1 bottom) down the frame."""
    w, h = image.size
    y = (0.12 + 0.76 * position) * h
    ImageDraw.Draw(image).rectangle((0.9 * w, y - 0.035 * h, 0.97 * w, y + 0.035 * h), fill=ICON_GREY)


def synth_image(
    class_name: str,
    size: tuple[int, int],
    rng: np.random.Generator,
    shortcut: bool = False,
    classes: tuple[str, ...] = KVASIR_CLASSES,
    own_frame: bool = False,
    realistic: bool = False,
) -> Image.Image:
    """One synthetic image of `class_name` at `size` (width, height). With `shortcut`, the class's own shape is
    made faint and a green box is drawn bottom-left: a model can tell the class only by the box. With `own_frame`,
    the class's position among `classes` picks its outline (OUTLINES) and where a small icon sits on the right edge:
    the frame tells the source, and so the class. With `realistic` as well, the outline's reach varies and the
    overlays move (REACH_SHARE, realistic_overlays), as on real frames."""
    width, height = size
    w, h = CANVAS, max(1, round(CANVAS * height / width))
    draw_signature, tint = signature_of(class_name, classes)
    tissue = np.array(tint) + rng.normal(0, 12, 3)
    low_freq = rng.normal(0, 18, (h // 8 + 1, w // 8 + 1, 3))
    noise = np.kron(low_freq, np.ones((8, 8, 1)))[:h, :w]
    canvas = Image.fromarray(np.clip(tissue + noise, 0, 255).astype(np.uint8))
    canvas = canvas.filter(ImageFilter.GaussianBlur(3))
    signed = canvas.copy()
    draw_signature(ImageDraw.Draw(signed), rng, w, h)
    if shortcut or realistic:
        weight = SHORTCUT_SIGNATURE_WEIGHT if shortcut else REALISTIC_SIGNATURE_WEIGHT
        canvas = Image.blend(canvas, signed, weight)
    else:
        canvas = signed
    # The black frame around the view and a text-like overlay that real endoscopy frames carry.
    k = classes.index(class_name) if class_name in classes else 0
    mask = Image.new("L", (w, h), 0)
    inset = 0.0
    if realistic:
        inset = rng.uniform(-OUTLINE_JITTER, OUTLINE_JITTER) + (REACH_INSET if rng.uniform() < REACH_SHARE else 0)
    draw_outline(mask, k if own_frame else 0, inset)
    framed = Image.composite(canvas, Image.new("RGB", (w, h)), mask)
    if realistic:
        realistic_overlays(framed, k, len(classes), rng)
    else:
        ImageDraw.Draw(framed).rectangle((4, 4, 4 + 0.15 * w, 10), fill=(200, 200, 200))
    if own_frame and not realistic:
        draw_icon(framed, k / max(1, len(classes) - 1))
    if shortcut:
        draw_green_box(framed)
    image = framed.resize((width, height), Image.BILINEAR)
    grain = rng.normal(0, 4, (height, width, 1))
    return Image.fromarray(np.clip(np.asarray(image) + grain, 0, 255).astype(np.uint8))
