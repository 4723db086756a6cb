"""Reading images: upright 8-bit RGB from any file Pillow opens, decoded at reduced scale when that suffices.

Pillow and numpy only, so that `kvasir predict` on a bundle never imports torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

RESAMPLE = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB from any mode: 16-bit and 32-bit greyscale are scaled (not clipped), CMYK/P/LA/RGBA converted,
    and EXIF orientation applied."""
    image = ImageOps.exif_transpose(image)
    if image.mode.startswith("I") or image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or values.max() > 255 else 255.0
        image = Image.fromarray(np.clip(values / top * 255.0, 0, 255).astype(np.uint8))
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
