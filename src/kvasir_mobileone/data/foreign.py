"""Images that are not endoscopy frames, made here (no download): scikit-learn's two photos (a temple, a flower)
whole and as crops, blank frames (white, black, grey) and noise. The test report measures how often the
out-of-distribution detector flags them; `kvasir synth --foreign DIR` writes them for `kvasir predict`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_sample_images

# the five inputs of the "I don't know" issue, in this order, then `crops` crops of each photo and two noises more
FIVE = ("temple", "white", "noise", "flower", "black")


def foreign_images(crops: int = 12, seed: int = 0, whole: bool = True) -> dict[str, np.ndarray]:
    """name -> HxWx3 uint8 image. whole False leaves out the images that are the same for every seed (the photos
    whole, the blank frames): another seed's set then shares no image with seed 0's."""
    rng = np.random.default_rng(seed)
    temple, flower = load_sample_images().images  # china.jpg, flower.jpg (427 x 640)
    shape = temple.shape
    images = {
        "temple": temple,
        "white": np.full(shape, 255, np.uint8),
        "noise": rng.integers(0, 256, shape, dtype=np.uint8),
        "flower": flower,
        "black": np.zeros(shape, np.uint8),
        "grey": np.full(shape, 128, np.uint8),
        "coarse_noise": np.asarray(
            Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).resize((640, 480), Image.NEAREST)
        ),
    }
    if not whole:
        images = {k: v for k, v in images.items() if "noise" in k}
    for name, photo in (("temple", temple), ("flower", flower)):
        h, w = photo.shape[:2]
        for i in range(crops):
            side = int(rng.integers(h // 4, h))
            y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
            images[f"{name}_crop{i}"] = photo[y : y + side, x : x + side]
    return images


def write_foreign(out_dir: str | Path, crops: int = 12, seed: int = 0, whole: bool = True) -> list[Path]:
    """Every foreign image as a PNG in out_dir (lossless: what predict reads is what was made)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, image in foreign_images(crops, seed, whole).items():
        path = out / f"{name}.png"
        Image.fromarray(image).save(path)
        paths.append(path)
    return paths
