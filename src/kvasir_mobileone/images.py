"""Reading images: upright 8-bit RGB from any file Pillow opens, decoded at reduced scale when that suffices, and
turned into the network's input exactly as in training.

Pillow and numpy only, so that `kvasir predict` on a bundle never imports torch."""

from __future__ import annotations

import base64
import functools
import hashlib
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
    (image_size, mean, std, interpolation, mask, field_of_view), exactly as in training: what the model never saw
    is black."""
    pixels = decode_resized(path, model_input["image_size"], model_input.get("interpolation", "bilinear"))
    pixels = hide(pixels, hidden_pixels(model_input))
    return network_input(pixels, model_input["mean"], model_input["std"]), pixels


def encode_view(visible: np.ndarray) -> str:
    """A square HxW bool field of view as text for JSON and checkpoints: base64 of its row-major packed bits."""
    return base64.b64encode(np.packbits(visible.astype(bool)).tobytes()).decode("ascii")


@functools.lru_cache(maxsize=8)
def decode_view(encoded: str, size: int) -> np.ndarray:
    """The size x size bool field of view of encode_view's text (True: the model sees the pixel)."""
    packed = np.frombuffer(base64.b64decode(encoded), np.uint8)
    if packed.size != (size * size + 7) // 8:
        raise ValueError(
            f"The field of view holds {8 * packed.size} bits, not those of a {size} x {size} input: it belongs to "
            "another model input. Train or export again."
        )
    bits = np.unpackbits(packed)[: size * size]
    visible = bits.reshape(size, size).astype(bool)
    visible.setflags(write=False)
    return visible


def view_sha256(visible: np.ndarray) -> str:
    """SHA-256 of a field of view's packed bits (what the run, checkpoint and bundle record)."""
    return hashlib.sha256(np.packbits(visible.astype(bool)).tobytes()).hexdigest()


def hidden_pixels(model_input: dict) -> np.ndarray | None:
    """HxW bool at the input size, True where the model never sees the image (the --data.mask_regions boxes and
    everything outside the field of view); None when it sees everything."""
    size = model_input["image_size"]
    hidden = box_mask(model_input.get("mask") or (), size, size)
    if model_input.get("field_of_view"):
        hidden |= ~decode_view(model_input["field_of_view"], size)
    return hidden if hidden.any() else None


def hide(pixels: np.ndarray, hidden: np.ndarray | None) -> np.ndarray:
    """A copy of an HWC image with the hidden pixels black; the image itself when nothing is hidden."""
    if hidden is None:
        return pixels
    masked = pixels.copy()
    masked[hidden] = 0
    return masked


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
