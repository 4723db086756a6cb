"""Reading images: upright 8-bit RGB from any file Pillow opens, decoded at reduced scale when that suffices, and
turned into the network's input exactly as in training.

Pillow and numpy only, so that `kvasir predict` on a bundle never imports torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

RESAMPLE = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}
# Full scale of each high-bit-depth greyscale mode, from the mode alone: an image's own maximum would make a dark
# image as bright as a light one. Pillow's "I" holds 16-bit data (16-bit PNG, TIFF); "F" holds floats in [0, 1].
FULL_SCALE = {"I;16": 65535.0, "I;16B": 65535.0, "I;16L": 65535.0, "I;16N": 65535.0, "I": 65535.0, "F": 1.0}


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB from any mode: 16/32-bit and float greyscale scaled by the mode's full range (not clipped),
    transparency composited over black (the colour of an endoscopy frame's border), CMYK/P converted, and EXIF
    orientation applied."""
    image = ImageOps.exif_transpose(image)
    if image.mode in FULL_SCALE:
        values = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.clip(values / FULL_SCALE[image.mode] * 255.0, 0, 255).round().astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image = Image.alpha_composite(black, rgba)
    return image.convert("RGB")


def load_rgb(path: str | Path, min_size: int | None = None) -> Image.Image:
    """Open an image as upright 8-bit RGB. With `min_size`, JPEGs decode at a reduced scale (DCT scaling) that
    still covers min_size x min_size, which is several times faster on Kvasir's 720x576-1920x1072 frames."""
    with Image.open(path) as image:
        if min_size and image.format == "JPEG":
            image.draft("RGB", (min_size, min_size))
        return to_rgb(image)


def decode_resized(path: str | Path, size: int, interpolation: str = "bilinear") -> np.ndarray:
    """size x size x 3 uint8 (writable): reduced-scale decode, upright RGB, then one Pillow resize.

    Training (cached or not), export's parity check and prediction all read images through this function."""
    return np.array(load_rgb(path, min_size=size).resize((size, size), RESAMPLE[interpolation]), dtype=np.uint8)


def network_input(pixels: np.ndarray, mean, std) -> np.ndarray:
    """HWC uint8 -> CHW float32 scaled to [0, 1] and normalized with the backbone's mean/std (as in training)."""
    mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    return ((pixels.astype(np.float32) / 255.0 - mean) / std).transpose(2, 0, 1)


def read_network_input(path: str | Path, model_input: dict) -> tuple[np.ndarray, np.ndarray]:
    """(CHW float32 network input, HWC uint8 resized image) for a model whose input is described by `model_input`
    (image_size, mean, std, interpolation, mask), exactly as in training: the masked regions are black."""
    pixels = decode_resized(path, model_input["image_size"], model_input.get("interpolation", "bilinear"))
    pixels = black_out(pixels, model_input.get("mask") or ())
    return network_input(pixels, model_input["mean"], model_input["std"]), pixels


def box_mask(boxes, height: int, width: int) -> np.ndarray:
    """Boolean height x width mask, True inside any of the boxes (relative x0, y0, x1, y1)."""
    mask = np.zeros((height, width), bool)
    for x0, y0, x1, y1 in boxes:
        mask[round(y0 * height) : round(y1 * height), round(x0 * width) : round(x1 * width)] = True
    return mask


def black_out(pixels: np.ndarray, boxes) -> np.ndarray:
    """A copy with the boxes set to black; the image itself when there are none."""
    if not len(boxes):
        return pixels
    masked = pixels.copy()
    masked[box_mask(boxes, *pixels.shape[:2])] = 0
    return masked
