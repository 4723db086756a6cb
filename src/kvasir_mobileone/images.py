"""Reading images: upright 8-bit RGB from any file Pillow opens, decoded at reduced scale when that suffices, and
turned into the network's input exactly as in training; and what that input is (ModelInput), the one description
the checkpoint, a bundle's metadata.json, the runtimes, Core ML and the model card read back.

Pillow and numpy only, so that `kvasir predict` on a bundle never imports torch."""

from __future__ import annotations

import base64
import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

RESAMPLE = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}
# Full scale of each high-bit-depth greyscale mode, from the mode alone: an image's own maximum would make a dark
# image as bright as a light one. Pillow's "I" holds 16-bit data (16-bit PNG, TIFF); "F" holds floats in [0, 1].
FULL_SCALE = {"I;16": 65535.0, "I;16B": 65535.0, "I;16L": 65535.0, "I;16N": 65535.0, "I": 65535.0, "F": 1.0}
VIEW_PNG_SEEN = 128  # a field_of_view.png pixel at least this bright (grey level) is seen by the model
MODEL_INPUT_VERSION = 3  # 1: the first release's checkpoint "normalization" and bundle "input" (no "version" key);
# 3 adds "clean" (--data.clean_frame): a release that reads up to 2 would silently skip the clean-up, so it refuses
CLEAN_STEPS = ("", "inpaint")  # ModelInput.clean: nothing, or the frame and overlay marks inside the view inpainted


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


@dataclass(frozen=True)
class ModelInput:
    """What the network's input is, decided once by `fit` and read back by everything after it: the size, mean/std
    and interpolation (from timm's data config, never typed by hand), the boxes masked out of every image
    (--data.mask_regions, relative x0, y0, x1, y1, with the names they come from) and the field of view
    (--data.field_of_view; encode_view's text, "" for the whole input), and the clean-up of each image's own frame and
    overlay marks inside the view before it (--data.clean_frame: "inpaint", or "" for none).

    to_dict/from_dict is the one serializer: the checkpoint's hparams, a bundle's metadata.json "input", the
    runtimes, Core ML and the card all go through it. The temperature is not here: it scales the output."""

    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"
    mask: tuple[tuple[float, float, float, float], ...] = ()
    field_of_view: str = ""
    mask_regions: tuple[str, ...] = ()
    clean: str = ""

    def to_dict(self) -> dict:
        return {
            "version": MODEL_INPUT_VERSION if self.clean else 2,  # readable by the releases before clean-up
            "image_size": self.image_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
            "mask": [list(b) for b in self.mask],
            "mask_regions": list(self.mask_regions) or None,
            "field_of_view": self.field_of_view,
            "field_of_view_sha256": self.view_sha256,
            "clean": self.clean,
        }

    @classmethod
    def from_dict(cls, values: dict) -> ModelInput:
        """From to_dict's output, or from today's release's checkpoint "normalization" and bundle "input" (their
        tensor fields, name, shape, dtype, layout, are the bundle's and are left out)."""
        version = values.get("version", 1)
        if version > MODEL_INPUT_VERSION:
            raise ValueError(
                f"The model-input description is version {version}; this release reads up to "
                f"{MODEL_INPUT_VERSION}: upgrade kvasir-mobileone."
            )
        model_input = cls(
            int(values["image_size"]),
            tuple(float(v) for v in values["mean"]),
            tuple(float(v) for v in values["std"]),
            values.get("interpolation", "bilinear"),
            tuple(tuple(float(v) for v in b) for b in values.get("mask") or ()),
            values.get("field_of_view") or "",
            tuple(values.get("mask_regions") or ()),
            values.get("clean") or "",
        )
        if model_input.clean not in CLEAN_STEPS:
            raise ValueError(f"Unknown clean-up step {model_input.clean!r} in the model-input description.")
        recorded = values.get("field_of_view_sha256")
        if recorded and recorded != model_input.view_sha256:
            raise ValueError(
                f"The field of view's bits do not match their SHA-256 ({recorded[:12]}...): the description was "
                "edited or damaged. Export or train again."
            )
        return model_input

    def describe(self) -> str:
        """One line for people: size, what is black, how it is normalized."""
        hidden = (
            [f"the regions {', '.join(self.mask_regions)}" if self.mask_regions else "mask boxes"] if self.mask else []
        )
        hidden += ["outside the field of view"] if self.field_of_view else []
        black = f"; black: {' and '.join(hidden)}" if hidden else ""
        clean = "; frame and overlay marks inside the view inpainted first" if self.clean else ""
        return f"{self.image_size} × {self.image_size} px ({self.interpolation}, whole frame){clean}{black}"

    @property
    def view_sha256(self) -> str | None:
        """SHA-256 of the field of view's packed bits; None without one."""
        return view_sha256(self.visible()) if self.field_of_view else None

    def visible(self) -> np.ndarray:
        """HxW bool: the field of view (all True without one)."""
        if not self.field_of_view:
            return np.ones((self.image_size, self.image_size), bool)
        return decode_view(self.field_of_view, self.image_size)

    def hidden(self) -> np.ndarray | None:
        """HxW bool, True where the model never sees the image (mask boxes, outside the view); None: nowhere."""
        hidden = box_mask(self.mask, self.image_size, self.image_size)
        if self.field_of_view:
            hidden |= ~self.visible()
        return hidden if hidden.any() else None

    def seen(self) -> np.ndarray | None:
        """HxW bool, True where the model sees the image; None: everywhere."""
        hidden = self.hidden()
        return ~hidden if hidden is not None else None

    def no_picture(self, batch: np.ndarray) -> np.ndarray:
        """Per network input (N x 3 x S x S, this input's normalization): whether it shows no picture in the view."""
        from kvasir_mobileone.answers import no_picture

        return no_picture(batch, self.mean, self.std, self.seen())

    def statistics(self, batch: np.ndarray) -> np.ndarray:
        """N x 16 colour and texture statistics of network inputs inside the view (the input detector's)."""
        from kvasir_mobileone.answers import input_statistics

        return input_statistics(batch, self.mean, self.std, self.seen())

    def decode(self, path: str | Path) -> np.ndarray:
        """HWC uint8 at the input size, as the model sees it: decoded, resized, then `prepare`d."""
        return self.prepare(self.decode_raw(path))

    def prepare(self, pixels: np.ndarray) -> np.ndarray:
        """An HWC uint8 image at the input size as the model sees it: its own frame and overlay marks inside the
        view inpainted (with clean "inpaint"), then the hidden pixels black. Every path to the network goes through
        here: training, evaluation, the audit, export's parity check, predict, serve and video."""
        if self.clean:
            from kvasir_mobileone.marks import clean_marks

            pixels = clean_marks(np.asarray(pixels, dtype=np.uint8), self.visible())
        return hide(pixels, self.hidden())

    def decode_raw(self, path: str | Path) -> np.ndarray:
        """HWC uint8 at the input size, nothing hidden (what the audit and Core ML's graph start from)."""
        return decode_resized(path, self.image_size, self.interpolation)

    def normalized(self, pixels: np.ndarray) -> np.ndarray:
        """HWC uint8 -> CHW float32 scaled to [0, 1] and normalized with mean/std (pixels hidden already)."""
        return network_input(pixels, self.mean, self.std)

    def from_resized(self, pixels: np.ndarray) -> np.ndarray:
        """CHW float32 network input of a frame already resized to the input size (a video frame the decoder scaled:
        deploy/video.py): `prepare`d, then mean/std, as `read` does after its resize."""
        return self.normalized(self.prepare(np.asarray(pixels, dtype=np.uint8)))

    def read(self, path: str | Path) -> tuple[np.ndarray, np.ndarray]:
        """(CHW float32 network input, HWC uint8 image as the model sees it), exactly as in training."""
        pixels = self.decode(path)
        return self.normalized(pixels), pixels


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
