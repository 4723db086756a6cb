"""What the backbone expects (size, mean/std, interpolation) and the training augmentations: on uint8 images in
DataLoader workers, or on whole float batches on the accelerator (kornia)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torchvision.transforms import v2 as T

from kvasir_mobileone.images import decode_view, hidden_pixels, view_sha256

ROTATION_DEGREES = 15.0
JITTER = (0.2, 0.2, 0.2, 0.02)  # brightness, contrast, saturation, hue


@dataclass(frozen=True)
class Normalization:
    """What the network's input is: size, mean/std and interpolation from timm's data config (never typed by
    hand), the regions masked out of every image (--data.mask_regions), as boxes in relative coordinates, and the
    field of view (--data.field_of_view; images.encode_view's text, "" for the whole input)."""

    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"
    mask: tuple[tuple[float, float, float, float], ...] = ()
    field_of_view: str = ""

    def to_dict(self) -> dict:
        values = asdict(self) | {"mean": list(self.mean), "std": list(self.std), "mask": [list(b) for b in self.mask]}
        return values | {"field_of_view_sha256": view_sha256(self.visible()) if self.field_of_view else None}

    @classmethod
    def from_dict(cls, values: dict) -> Normalization:
        mask = tuple(tuple(b) for b in values.get("mask", ()))
        return cls(
            int(values["image_size"]),
            tuple(values["mean"]),
            tuple(values["std"]),
            values["interpolation"],
            mask,
            values.get("field_of_view") or "",
        )

    def visible(self) -> np.ndarray:
        """HxW bool: the field of view (all True without one)."""
        if not self.field_of_view:
            return np.ones((self.image_size, self.image_size), bool)
        return decode_view(self.field_of_view, self.image_size)

    def hidden(self) -> np.ndarray | None:
        """HxW bool, True where the model never sees the image (mask boxes, outside the view); None: nowhere."""
        return hidden_pixels(asdict(self))


def train_augmentations() -> T.Compose:
    """The original workflow's augmentations, on uint8 CHW tensors in DataLoader workers: rotation, flips, jitter."""
    return T.Compose(
        [T.RandomRotation(ROTATION_DEGREES), T.RandomHorizontalFlip(), T.RandomVerticalFlip(), T.ColorJitter(*JITTER)]
    )


def device_augmentations() -> torch.nn.Module:
    """The same augmentations for whole float batches on the accelerator, random per image (kornia)."""
    import kornia.augmentation as K

    return torch.nn.Sequential(
        K.RandomRotation(ROTATION_DEGREES, p=1.0),
        K.RandomHorizontalFlip(),
        K.RandomVerticalFlip(),
        K.ColorJitter(*JITTER, p=1.0),
    )


def normalize(images: torch.Tensor, norm: Normalization) -> torch.Tensor:
    """uint8 (or [0, 1] float) NCHW batch -> float normalized with the backbone's mean/std, on its own device."""
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    mean = torch.tensor(norm.mean, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(norm.std, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std
