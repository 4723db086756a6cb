"""Normalizing batches as the model input says (images.ModelInput), and the training augmentations: on uint8 images in
DataLoader workers, or on whole float batches on the accelerator (kornia)."""

from __future__ import annotations

import torch
from torchvision.transforms import v2 as T

from kvasir_mobileone.extras import require
from kvasir_mobileone.images import ModelInput

ROTATION_DEGREES = 15.0
JITTER = (0.2, 0.2, 0.2, 0.02)  # brightness, contrast, saturation, hue


# --data.augment: a stronger policy before the standard augmentations (torchvision's, on uint8 images)
POLICIES = {
    "standard": lambda: [],
    "randaugment": lambda: [T.RandAugment(num_ops=2, magnitude=9)],
    "trivialaugment": lambda: [T.TrivialAugmentWide()],
}


def train_augmentations(augment: str = "standard") -> T.Compose:
    """The original workflow's augmentations, on uint8 CHW tensors in DataLoader workers: rotation, flips, jitter;
    after RandAugment or TrivialAugment when --data.augment asks for one."""
    return T.Compose(
        [
            *POLICIES[augment](),
            T.RandomRotation(ROTATION_DEGREES),
            T.RandomHorizontalFlip(),
            T.RandomVerticalFlip(),
            T.ColorJitter(*JITTER),
        ]
    )


def device_augmentations() -> torch.nn.Module:
    """The same augmentations for whole float batches on the accelerator, random per image (kornia)."""
    K = require("kornia.augmentation", "gpu")

    return torch.nn.Sequential(
        K.RandomRotation(ROTATION_DEGREES, p=1.0),
        K.RandomHorizontalFlip(),
        K.RandomVerticalFlip(),
        K.ColorJitter(*JITTER, p=1.0),
    )


def normalize(images: torch.Tensor, model_input: ModelInput) -> torch.Tensor:
    """uint8 (or [0, 1] float) NCHW batch -> float normalized with the backbone's mean/std, on its own device."""
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    mean = torch.tensor(model_input.mean, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(model_input.std, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std
