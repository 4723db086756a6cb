"""Images that are not endoscopy frames, made here (no download), in two sets drawn from different sources:

- the report's set (what the test report and `kvasir synth --foreign DIR` measure on): scikit-learn's two photos (a
  temple, a flower) whole and as crops, flat frames (black, white, grey, red), uniform, coarse and grey noise, a
  radial and a vertical gradient, text and a screen as screenshots, and a terrain rendered in grey (a radiograph's
  look);
- the selection set (what `--uncertainty.detector auto` chooses on): matplotlib's photos (Grace Hopper, a package)
  whole and as crops, an MRI slice, charts, Gaussian and salt-and-pepper noise, colour gradients across, stained
  cells (a microscope's look) and a checkerboard.

No image, and no source, is in both: the detector is chosen on one and measured on the other."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_sample_images

# the five inputs of the "I don't know" issue, in this order (the report's set holds them)
FIVE = ("temple", "white", "noise", "flower", "black")
SHAPE = (480, 640)


def sample_photo(name: str) -> np.ndarray:
    """One of matplotlib's bundled sample images as HxWx3 uint8."""
    from matplotlib import cbook

    with Image.open(cbook.get_sample_data(name)) as image:
        return np.asarray(image.convert("RGB"))


def rendered(draw, seed: int) -> np.ndarray:
    """A matplotlib figure (Agg, 640 x 480) drawn by `draw(figure, rng)`, as HxWx3 uint8: screenshots and charts."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 4.8), dpi=100)
    canvas = FigureCanvasAgg(figure)
    draw(figure, np.random.default_rng(seed))
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def text_page(figure, rng) -> None:
    words = [
        "the",
        "quick",
        "brown",
        "fox",
        "jumps",
        "over",
        "a",
        "lazy",
        "dog",
        "while",
        "patients",
        "wait",
        "for",
        "their",
        "results",
    ]
    for i in range(14):
        line = " ".join(rng.choice(words, 7))
        figure.text(0.04, 0.95 - i * 0.065, line, fontsize=13, family="DejaVu Sans")


def screen(figure, rng) -> None:
    figure.patch.set_facecolor("#e8e8e8")
    for y in (0.1, 0.4, 0.7):
        ax = figure.add_axes((0.05, y, 0.9, 0.22))
        ax.set_facecolor("white")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.text(0.02, 0.5, f"Patient {int(rng.integers(1000, 9999))}   Room {int(rng.integers(1, 9))}", va="center")


def chart(figure, rng) -> None:
    ax = figure.add_subplot()
    x = np.linspace(0, 10, 200)
    for _ in range(3):
        ax.plot(x, np.cumsum(rng.standard_normal(200)))
    ax.set_title("measurements")
    ax.grid(True)


def bar_chart(figure, rng) -> None:
    ax = figure.add_subplot()
    ax.bar(range(8), rng.integers(1, 20, 8), color=["tab:blue", "tab:orange", "tab:green", "tab:red"] * 2)
    ax.set_xlabel("week")


def crops(images: dict, name: str, photo: np.ndarray, count: int, rng) -> None:
    h, w = photo.shape[:2]
    for i in range(count):
        side = int(rng.integers(min(h, w) // 4, min(h, w)))
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        images[f"{name}_crop{i}"] = photo[y : y + side, x : x + side]


def gradient(colours, vertical: bool = False, radial: bool = False) -> np.ndarray:
    h, w = SHAPE
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if radial:
        t = np.hypot(yy - h / 2, xx - w / 2) / np.hypot(h / 2, w / 2)
    else:
        t = yy / (h - 1) if vertical else xx / (w - 1)
    a, b = np.float32(colours[0]), np.float32(colours[1])
    return (a + (b - a) * t[..., None]).astype(np.uint8)


def upscaled(small: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(small).resize(SHAPE[::-1], Image.NEAREST))


def report_images(crop_count: int, rng) -> dict[str, np.ndarray]:
    from matplotlib import cbook

    temple, flower = load_sample_images().images  # china.jpg, flower.jpg (427 x 640)
    shape = temple.shape
    images = {
        "temple": temple,
        "white": np.full(shape, 255, np.uint8),
        "noise": rng.integers(0, 256, shape, dtype=np.uint8),
        "flower": flower,
        "black": np.zeros(shape, np.uint8),
        "grey": np.full(shape, 128, np.uint8),
        "red": np.broadcast_to(np.uint8([190, 30, 30]), shape).copy(),
        "coarse_noise": upscaled(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)),
        "grey_noise": np.repeat(rng.integers(0, 256, (*SHAPE, 1), dtype=np.uint8), 3, axis=2),
        "radial_gradient": gradient(([250, 240, 200], [20, 40, 90]), radial=True),
        "vertical_gradient": gradient(([10, 10, 10], [240, 240, 240]), vertical=True),
        "text": rendered(text_page, int(rng.integers(1 << 30))),
        "screen": rendered(screen, int(rng.integers(1 << 30))),
    }
    height = cbook.get_sample_data("jacksboro_fault_dem.npz")["elevation"].astype(np.float32)  # an NpzFile
    grey = (height - height.min()) / np.ptp(height) * 255
    shade = np.clip(128 + 8 * np.gradient(grey)[0], 0, 255)  # lit from above: a relief's look
    images["terrain"] = np.repeat(grey.astype(np.uint8)[..., None], 3, axis=2)
    images["terrain_shaded"] = np.repeat(shade.astype(np.uint8)[..., None], 3, axis=2)
    crops(images, "temple", temple, crop_count, rng)
    crops(images, "flower", flower, crop_count, rng)
    return images


def selection_images(crop_count: int, rng) -> dict[str, np.ndarray]:
    from matplotlib import cbook

    hopper, package = sample_photo("grace_hopper.jpg"), sample_photo("Minduka_Present_Blue_Pack.png")
    with cbook.get_sample_data("s1045.ima.gz") as f:
        raw = f.read()
    slice_ = np.frombuffer(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw, np.uint16).reshape(256, 256)
    mri = (slice_.astype(np.float32) / max(int(slice_.max()), 1) * 255).astype(np.uint8)
    mri = np.repeat(mri[..., None], 3, axis=2)
    salt = rng.random(SHAPE)
    h, w = SHAPE
    yy, xx = np.mgrid[0:h, 0:w]
    cells = np.empty((h, w, 3), np.uint8)
    cells[:] = (232, 190, 215)  # eosin's pink
    for _ in range(60):
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(8, 22)
        cells[(yy - cy) ** 2 + ((xx - cx) * 0.8) ** 2 < r**2] = (110, 60, 150)  # haematoxylin's purple nuclei
    checks = (np.indices((12, 16)).sum(axis=0) % 2 * 255).astype(np.uint8)
    images = {
        "hopper": hopper,
        "package": package,
        "mri": mri,
        "chart": rendered(chart, int(rng.integers(1 << 30))),
        "bar_chart": rendered(bar_chart, int(rng.integers(1 << 30))),
        "gaussian_noise": np.clip(rng.normal(128, 50, (*SHAPE, 3)), 0, 255).astype(np.uint8),
        "salt_and_pepper": np.where(salt[..., None] < 0.5, 0, 255).astype(np.uint8).repeat(3, axis=2),
        "gradient_across": gradient(([200, 30, 30], [30, 30, 200])),
        "gradient_green": gradient(([20, 120, 20], [230, 250, 180])),
        "cells": cells,
        "checkerboard": upscaled(np.repeat(checks[..., None], 3, axis=2)),
    }
    crops(images, "hopper", hopper, crop_count, rng)
    crops(images, "package", package, max(0, crop_count // 2), rng)
    crops(images, "mri", mri, max(0, crop_count // 2), rng)
    return images


def foreign_images(crops: int = 4, seed: int = 0, selection: bool = False) -> dict[str, np.ndarray]:
    """name -> HxWx3 uint8 image: the report's set, or (selection) the selection set, with `crops` crops of each
    of its photos."""
    rng = np.random.default_rng(seed)
    return selection_images(crops, rng) if selection else report_images(crops, rng)


def write_foreign(out_dir: str | Path, crops: int = 4, seed: int = 0, selection: bool = False) -> list[Path]:
    """Every image of a set as a PNG in out_dir (lossless: what predict reads is what was made)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, image in foreign_images(crops, seed, selection).items():
        path = out / f"{name}.png"
        Image.fromarray(np.ascontiguousarray(image)).save(path)
        paths.append(path)
    return paths


def outlier_images(count: int, size: int, seed: int = 0) -> np.ndarray:
    """count x size x size x 3 uint8 images that are not endoscopy, for outlier exposure in training (Hendrycks et
    al. 2019: the model learns to spread its probability over the classes on them), from a third family of sources,
    none of the report's or the selection set's: smooth random fields, sinusoidal gratings, random polygons and
    ellipses of random colours, and scribbles."""
    from PIL import ImageDraw

    rng = np.random.default_rng(seed)
    out = np.empty((count, size, size, 3), np.uint8)
    for i in range(count):
        kind = i % 4
        if kind == 0:  # a smooth random field: a few random pixels blown up bicubically
            cells = int(rng.integers(2, 9))
            small = rng.integers(0, 256, (cells, cells, 3), dtype=np.uint8)
            image = Image.fromarray(small).resize((size, size), Image.BICUBIC)
        elif kind == 1:  # a sinusoidal grating of random frequency, angle and colours
            yy, xx = np.mgrid[0:size, 0:size] / size
            angle, frequency = rng.uniform(0, np.pi), rng.uniform(2, 12)
            wave = 0.5 + 0.5 * np.sin(2 * np.pi * frequency * (xx * np.cos(angle) + yy * np.sin(angle)))
            a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
            image = Image.fromarray((a + (b - a) * wave[..., None]).astype(np.uint8))
        else:  # shapes (2) or scribbles (3) on a random colour
            image = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 256, 3)))
            draw = ImageDraw.Draw(image)
            for _ in range(int(rng.integers(3, 9))):
                colour = tuple(int(v) for v in rng.integers(0, 256, 3))
                points = [tuple(int(v) for v in rng.integers(0, size, 2)) for _ in range(int(rng.integers(3, 7)))]
                if kind == 2 and rng.random() < 0.5:
                    x0, y0 = rng.integers(0, size, 2)
                    r = int(rng.integers(size // 10, size // 3))
                    draw.ellipse((int(x0) - r, int(y0) - r, int(x0) + r, int(y0) + r), fill=colour)
                elif kind == 2:
                    draw.polygon(points, fill=colour)
                else:
                    draw.line(points, fill=colour, width=int(rng.integers(1, max(2, size // 16))))
        out[i] = np.asarray(image)
    return out
