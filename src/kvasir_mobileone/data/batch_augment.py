"""The training augmentations as a few batched tensor ops, random per image, on whatever device the batch is on.

The same transforms as `train_augmentations()` (torchvision in DataLoader workers): rotation within
±ROTATION_DEGREES with black fill, horizontal and vertical flips, colour jitter. Rotation and both flips are one
affine warp (one grid_sample for the whole batch); each jitter is one broadcast op with a factor per image, in
torchvision's formulas, so that `tests/test_gpu_path.py` can check every op against torchvision image by image.
kornia's augmentation classes do the same with many small kernels and host-side parameter sampling per op; this
is the GPU-resident path's reason to exist (issue 14)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.transforms.v2.functional._color import _hsv_to_rgb, _rgb_to_hsv

from kvasir_mobileone.data.transforms import JITTER, ROTATION_DEGREES

GREY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights


def grey(images: torch.Tensor) -> torch.Tensor:
    """N x 1 x H x W luminance of N x 3 x H x W images, as torchvision computes it."""
    weights = torch.tensor(GREY, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True)


def _per_image(factors: torch.Tensor) -> torch.Tensor:
    return factors.view(-1, 1, 1, 1)


def adjust_brightness(images: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    return (images * _per_image(factors)).clamp_(0, 1)


def adjust_contrast(images: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    mean = grey(images).mean(dim=(1, 2, 3), keepdim=True)
    f = _per_image(factors)
    return (images * f + mean * (1 - f)).clamp_(0, 1)


def adjust_saturation(images: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    f = _per_image(factors)
    return (images * f + grey(images) * (1 - f)).clamp_(0, 1)


def adjust_hue(images: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Hue shifted by `shifts` (fractions of the colour circle, one per image), through HSV as torchvision does."""
    hsv = _rgb_to_hsv(images)
    hue = (hsv[:, 0] + shifts.view(-1, 1, 1)).remainder(1.0)
    return _hsv_to_rgb(torch.stack((hue, hsv[:, 1], hsv[:, 2]), dim=1))


def affine_flip_rotate(images: torch.Tensor, degrees: torch.Tensor, flip_x: torch.Tensor, flip_y: torch.Tensor):
    """Each image flipped (where flip_x/flip_y) then rotated counter-clockwise by `degrees` about its centre,
    bilinear, black outside: one grid_sample for the batch (torchvision's rotate, same pixel-centre convention)."""
    n, _, height, width = images.shape
    angle = torch.deg2rad(degrees.to(images.dtype))
    cos, sin = torch.cos(angle), torch.sin(angle)
    sx = 1 - 2 * flip_x.to(images.dtype)
    sy = 1 - 2 * flip_y.to(images.dtype)
    # output pixel (x, y) in normalized coordinates reads the input at R(-angle) (x, y), then un-flips; the
    # aspect terms keep the rotation rigid in pixels when height != width
    theta = torch.zeros(n, 2, 3, device=images.device, dtype=images.dtype)
    theta[:, 0, 0] = sx * cos
    theta[:, 0, 1] = -sx * sin * height / width
    theta[:, 1, 0] = sy * sin * width / height
    theta[:, 1, 1] = sy * cos
    grid = F.affine_grid(theta, [n, 3, height, width], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class BatchAugment(torch.nn.Module):
    """Rotation, flips and colour jitter for a float [0, 1] N x 3 x H x W batch, random per image.

    Factors are drawn as torchvision's ColorJitter draws them (brightness, contrast, saturation uniform in
    [1 - j, 1 + j], hue in [-j, j]); the jitters are applied in that fixed order rather than a random one."""

    def __init__(self, degrees: float = ROTATION_DEGREES, jitter: tuple[float, float, float, float] = JITTER):
        super().__init__()
        self.degrees = degrees
        self.brightness, self.contrast, self.saturation, self.hue = jitter

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        n, device = images.shape[0], images.device

        def uniform(low: float, high: float) -> torch.Tensor:
            return torch.rand(n, device=device, generator=generator) * (high - low) + low

        def coin() -> torch.Tensor:
            return torch.rand(n, device=device, generator=generator) < 0.5

        images = affine_flip_rotate(images, uniform(-self.degrees, self.degrees), coin(), coin())
        images = adjust_brightness(images, uniform(1 - self.brightness, 1 + self.brightness))
        images = adjust_contrast(images, uniform(1 - self.contrast, 1 + self.contrast))
        images = adjust_saturation(images, uniform(1 - self.saturation, 1 + self.saturation))
        return adjust_hue(images, uniform(-self.hue, self.hue))
