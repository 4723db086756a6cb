"""An image's frame and overlay marks, and their clean-up: the near-black frame connected to the border, the
overlay-coloured pixels (pixels.py's rules), both grown by the blur a resize leaves, and OpenCV's inpainting that
fills them from the tissue around them. What the frame swap (field_of_view.swap_frame) and the model input's
clean-up (--data.clean_frame inpaint: ModelInput.prepare) share. numpy, scipy and OpenCV (imported when used)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

import kvasir_mobileone.pixels as pixel_rules

EIGHT_NEIGHBOURS = np.ones((3, 3), bool)
INPAINT_RADIUS = 3  # pixels around each filled pixel that OpenCV's Telea method reads


def frame_pixels(pixels: np.ndarray) -> np.ndarray:
    """HxW bool: near-black pixels connected (8-neighbour) to the image border, of an HWC uint8 image."""
    dark = pixel_rules.near_black(pixels)
    labels, _ = ndimage.label(dark, structure=EIGHT_NEIGHBOURS)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    return np.isin(labels, border[border > 0])


def overlay_pixels(pixels: np.ndarray) -> np.ndarray:
    """HxW bool: overlay-coloured pixels, green (a position box) or bright grey and white (text, icons)."""
    return pixel_rules.overlay(pixels)


def marks(pixels: np.ndarray) -> np.ndarray:
    """HxW bool: an image's frame and overlay pixels with their blurred fringe (a pixel per 32 of the side, so that
    no ghost of an outline or icon is left outside it): its frame and its overlay marks of at least a fringe's square
    (text, boxes, icons) grown by the fringe, smaller marks (a highlight on the mucosa is overlay-coloured too) by
    one pixel, so that the tissue around highlights stays as it is."""
    frame, overlay = frame_pixels(pixels), overlay_pixels(pixels)
    grown = ndimage.binary_dilation(
        frame | large_overlays(overlay, frame), EIGHT_NEIGHBOURS, iterations=fringe_of(pixels)
    )
    return grown | ndimage.binary_dilation(overlay, EIGHT_NEIGHBOURS)


def fringe_of(pixels: np.ndarray) -> int:
    """The blurred fringe of a mark in an image of this side: a pixel per 32 of the side."""
    return max(1, pixels.shape[0] // 32)


def large_overlays(overlay: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """HxW bool: the overlay marks (HxW bool) off the frame of at least a fringe's square (text, boxes, icons; not
    the small highlights on the mucosa, which are overlay-coloured too)."""
    fringe = fringe_of(overlay)
    labels, n = ndimage.label(overlay & ~frame, structure=EIGHT_NEIGHBOURS)
    large = np.bincount(labels.ravel(), minlength=n + 1) >= fringe * fringe
    large[0] = False
    return large[labels]


def inpaint(pixels: np.ndarray, where: np.ndarray) -> np.ndarray:
    """A copy of an HWC uint8 image with the pixels `where` (HxW bool) filled from the pixels around them
    (cv2.inpaint, Telea, INPAINT_RADIUS)."""
    import cv2

    return cv2.inpaint(np.ascontiguousarray(pixels), where.astype(np.uint8), INPAINT_RADIUS, cv2.INPAINT_TELEA)


def clean_marks(pixels: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """An HWC uint8 image with its own frame and overlay marks inside `visible` (HxW bool: the field of view, or
    everywhere) filled from the tissue around them, so that they look like neither (--data.clean_frame inpaint).
    Marks outside the view are set to the mean tissue colour first, so that no black bleeds in from there; the
    model input hides them afterwards. An image with no tissue at all is returned as it is."""
    own = marks(pixels)
    fill = own & visible
    if not fill.any() or own.all():
        return pixels
    base = pixels.copy()
    base[own & ~visible] = pixels[~own].mean(axis=0).round().astype(np.uint8)
    return inpaint(base, fill)
