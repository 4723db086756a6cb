"""Named regions of an endoscopy frame that are not tissue (the ScopeGuide box, on-screen text, the black frame),
masking them, and a census of which frames carry them. numpy only: `predict` on a bundle masks without torch.

Boxes are (x0, y0, x1, y1) in relative coordinates of the square network input (0 = left/top, 1 = right/bottom).
"""

from __future__ import annotations

import numpy as np

import kvasir_mobileone.pixels as pixel_rules
from kvasir_mobileone.data.folder import DataError
from kvasir_mobileone.images import box_mask, hide

Box = tuple[float, float, float, float]

# Where Kvasir v2 frames carry things other than tissue (see shared/KVASIR.md): the green ScopeGuide position box
# (colonoscopy only) bottom-left, date/time/settings text top-left, and the black frame around the round view.
REGIONS: dict[str, tuple[Box, ...]] = {
    "bottom-left-box": ((0.0, 0.62, 0.32, 1.0),),
    "top-left-text": ((0.0, 0.0, 0.40, 0.16),),
    "left-strip": ((0.0, 0.0, 0.12, 1.0),),
    "right-strip": ((0.88, 0.0, 1.0, 1.0),),
    "black-corners": ((0.0, 0.0, 0.15, 0.15), (0.85, 0.0, 1.0, 0.15), (0.0, 0.85, 0.15, 1.0), (0.85, 0.85, 1.0, 1.0)),
}
FILLS = ("black", "mean")  # the frame's black, and the image's mean tissue colour (does not look like a black box)


def parse_regions(specs: list[str] | tuple[str, ...] | None) -> dict[str, tuple[Box, ...]]:
    """`name` (one of REGIONS) or `name:x0,y0,x1,y1` (a box of your own) -> {name: boxes}."""
    regions: dict[str, tuple[Box, ...]] = {}
    for spec in specs or ():
        name, _, coords = spec.partition(":")
        if not coords:
            if name not in REGIONS:
                raise DataError(f"Unknown region {name!r}: use one of {', '.join(REGIONS)} or name:x0,y0,x1,y1.")
            regions[name] = REGIONS[name]
            continue
        try:
            box = tuple(float(v) for v in coords.split(","))
        except ValueError as err:
            raise DataError(f"Region {spec!r}: coordinates must be numbers, as in box:0,0.6,0.3,1.") from err
        if len(box) != 4 or not (0 <= box[0] < box[2] <= 1 and 0 <= box[1] < box[3] <= 1):
            raise DataError(f"Region {spec!r}: give x0,y0,x1,y1 with 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1.")
        regions[name] = (box,)
    return regions


def tissue_colour(pixels: np.ndarray, outside: np.ndarray) -> np.ndarray:
    """Mean colour of the pixels outside the mask that are not frame black (a grey when there are none)."""
    candidates = pixels[outside]
    tissue = candidates[candidates.max(axis=1) > pixel_rules.TISSUE]
    return tissue.mean(axis=0) if len(tissue) else np.full(3, 128.0)


def mask_pixels(pixels: np.ndarray, boxes, fill: str = "black") -> np.ndarray:
    """A copy of an HWC uint8 image with the boxes filled with black or the image's mean tissue colour."""
    if fill == "black" or not len(boxes):
        return hide(pixels, box_mask(boxes, *pixels.shape[:2])) if len(boxes) else pixels
    mask = box_mask(boxes, *pixels.shape[:2])
    masked = pixels.copy()
    masked[mask] = tissue_colour(pixels, ~mask).round().astype(np.uint8)
    return masked


def overlay_census(pixels: np.ndarray) -> dict[str, bool]:
    """Which overlays a frame (HWC uint8, any size) carries: a green box bottom-left (ScopeGuide), a black box
    there instead (the box covered), and text in the top-left band (many bright, grey pixels on dark)."""
    height, width = pixels.shape[:2]
    box = box_mask(REGIONS["bottom-left-box"], height, width)
    inner = box_mask(((0.03, 0.68, 0.28, 0.96),), height, width)  # inside the box, away from the frame's edge
    green = pixel_rules.green(pixels)
    text_band = box_mask(REGIONS["top-left-text"], height, width)
    bright_grey = pixel_rules.grey(pixels, pixel_rules.TEXT_GREY + 1)
    return {
        "green_box": bool(green[box].mean() > 0.10),
        "black_box": bool(pixels[inner].max(axis=1).astype(np.int32).mean() < pixel_rules.COVERED_BOX),
        "text_top_left": bool(bright_grey[text_band].mean() > 0.02),
    }


def census_by_class(thumbs: np.ndarray, labels: np.ndarray, class_names: list[str]) -> dict[str, dict[str, float]]:
    """Per class: the share of its images (uint8 NHWC thumbnails) with a green box, a black box, text top-left."""
    found = [overlay_census(t) for t in thumbs]
    return {
        name: {k: float(np.mean([f[k] for f, y in zip(found, labels, strict=True) if y == c])) for k in found[0]}
        for c, name in enumerate(class_names)
        if np.any(labels == c)
    }
