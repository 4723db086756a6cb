"""The frame around the tissue, per class and per image: where each class's frames are frame and overlay
(frame_maps: the audit's and the field of view's evidence), and one image's tissue under another's frame
(swap_frame: --data.frame_swap in training, the audit's swap test). numpy and scipy; OpenCV's inpainting."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from kvasir_mobileone.marks import EIGHT_NEIGHBOURS, frame_pixels, inpaint, marks, overlay_pixels


@dataclass(frozen=True)
class FrameMaps:
    """Per class (in `class_names` order): the share of its images in which each pixel is frame, and overlay."""

    class_names: list[str]
    counts: list[int]
    frame: np.ndarray  # C x H x W, in [0, 1]
    overlay: np.ndarray  # C x H x W

    @property
    def not_tissue(self) -> np.ndarray:
        """Upper bound of the share of frames in which the pixel is frame or overlay (the two never overlap)."""
        return np.clip(self.frame + self.overlay, 0, 1)

    def difference(self) -> np.ndarray:
        """HxW: the largest difference between two classes' non-tissue shares at each pixel."""
        present = self.not_tissue[np.array(self.counts) > 0]
        return present.max(axis=0) - present.min(axis=0)


def frame_maps(images: np.ndarray, labels: np.ndarray, class_names: list[str]) -> FrameMaps:
    """The per-class frame and overlay maps of uint8 NHWC images."""
    size = images.shape[1:3]
    frame = np.zeros((len(class_names), *size))
    overlay = np.zeros((len(class_names), *size))
    counts = np.bincount(labels, minlength=len(class_names))
    for image, label in zip(images, labels, strict=True):
        is_frame = frame_pixels(image)
        frame[label] += is_frame
        overlay[label] += overlay_pixels(image) & ~is_frame
    scale = np.maximum(counts, 1)[:, None, None]
    return FrameMaps(list(class_names), counts.tolist(), frame / scale, overlay / scale)


def swap_frame(tissue: np.ndarray, donor: np.ndarray) -> np.ndarray:
    """`tissue`'s image under `donor`'s frame and overlays (HWC uint8, same size): the image's own marks (frame and
    overlays with their fringe) filled from the tissue around them (OpenCV's inpainting), then the donor's frame and
    overlay pixels pasted over it with one pixel of their edge (the blur a resize leaves), not more: a wider ring would
    be the donor's tissue, which may tell its class."""
    own = marks(tissue)
    given = ndimage.binary_dilation(frame_pixels(donor) | overlay_pixels(donor), EIGHT_NEIGHBOURS)
    if own.all():
        swapped = np.full_like(tissue, 128)
    else:
        swapped = tissue.copy()
        swapped[own & given] = tissue[~own].mean(axis=0).round().astype(np.uint8)  # pasted over below anyway
        fill = own & ~given  # inpainting only what stays visible: a third of the time on a round frame
        if fill.any():
            swapped = inpaint(swapped, fill)
    swapped[given] = donor[given]
    return swapped
