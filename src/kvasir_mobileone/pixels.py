"""What a pixel of an endoscopy frame looks like when it is not tissue: the one place for the colour rules of frame
black, overlay green (a position box) and overlay grey or white (text, icons). Tissue, dye and blood are saturated
reds, pinks and blues. numpy only. HWC uint8 (or int) arrays in, HxW bool out."""

from __future__ import annotations

import numpy as np

DARK = 35  # near-black: the brightest channel below this (JPEG noise keeps a black frame under ~20)
GREEN_MARGIN = 40  # overlay green: G above both R and B by more than this
GREY_SPREAD = 40  # grey or white: the channels within this of each other
OVERLAY_GREY = 150  # overlay grey: every channel at least this bright (the field of view's frame maps)
# the census' text test is stricter on purpose: it counts a share of pixels in a band where pale highlights on
# mucosa also reach 150, so it takes only the brighter text grey
TEXT_GREY = 170
COVERED_BOX = 25  # a position box covered in black: its inner pixels' brightest channel averages below this
# tissue for a fill colour: brighter than frame black with margin, so that JPEG fringes of the frame are left out
TISSUE = 40


def _channels(pixels: np.ndarray):
    rgb = pixels.astype(np.int32)
    return rgb, rgb[..., 0], rgb[..., 1], rgb[..., 2]


def near_black(pixels: np.ndarray) -> np.ndarray:
    return pixels.max(axis=-1) < DARK


def green(pixels: np.ndarray) -> np.ndarray:
    _, r, g, b = _channels(pixels)
    return (g > r + GREEN_MARGIN) & (g > b + GREEN_MARGIN)


def grey(pixels: np.ndarray, at_least: int = 0) -> np.ndarray:
    """Grey, white (or, with at_least 0, black): unsaturated pixels, every channel >= at_least."""
    rgb, *_ = _channels(pixels)
    low, high = rgb.min(axis=-1), rgb.max(axis=-1)
    return (low >= at_least) & (high - low < GREY_SPREAD)


def overlay(pixels: np.ndarray) -> np.ndarray:
    """Overlay-coloured: green (a position box) or bright grey and white (text, icons)."""
    return green(pixels) | grey(pixels, OVERLAY_GREY)


def overlay_or_frame(pixels: np.ndarray) -> np.ndarray:
    """Anything but tissue's colours: green, or unsaturated at any level (text, covered boxes, the frame)."""
    return green(pixels) | grey(pixels)
