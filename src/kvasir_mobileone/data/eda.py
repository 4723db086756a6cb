"""`kvasir eda`: class counts (chart, markdown, JSON), a sample grid per class, a histogram of resolutions."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import numpy as np
from tqdm import tqdm

from kvasir_mobileone.data.regions import census_by_class
from kvasir_mobileone.images import decode_resized, load_rgb
from kvasir_mobileone.io import markdown_table, pyplot, save_figure, write_json, write_text

plt = pyplot()


def _count_bars(counts: dict[str, int], title: str, xlabel: str, colour: str, path: Path) -> Path:
    """A labelled bar chart of image counts."""
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(counts)), 4.5))
    ax.bar_label(ax.bar(list(counts), list(counts.values()), color=colour))
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("images (count)")
    ax.tick_params(axis="x", rotation=40)
    return save_figure(fig, path)


def plot_class_counts(counts: dict[str, int], path: Path) -> Path:
    return _count_bars(counts, "Images per class", "class", "tab:blue", path)


def plot_sample_grid(
    items: list[tuple[str, str]], data_dir: Path, path: Path, per_class: int = 4, seed: int = 0
) -> Path:
    by_class: dict[str, list[str]] = {}
    for rel, label in items:
        by_class.setdefault(label, []).append(rel)
    rng = random.Random(seed)
    fig, axes = plt.subplots(len(by_class), per_class, figsize=(2.2 * per_class, 2.0 * len(by_class)), squeeze=False)
    for row, (label, rels) in zip(axes, by_class.items(), strict=True):
        picks = rng.sample(rels, min(per_class, len(rels)))
        for ax, rel in zip(row, picks + [None] * (per_class - len(picks)), strict=True):
            ax.axis("off")
            if rel is not None:
                ax.imshow(load_rgb(data_dir / rel, min_size=160))
        row[0].set_title(label, loc="left", fontsize=9)
    fig.suptitle(f"Random samples, {per_class} per class")
    return save_figure(fig, path)


def plot_resolutions(sizes: list[tuple[int, int]], path: Path) -> Path:
    ordered = dict(Counter(f"{w}×{h}" for w, h in sizes).most_common())
    return _count_bars(ordered, "Image resolutions", "width × height (pixels)", "tab:green", path)


def plot_census(found: dict[str, dict[str, float]], path: Path) -> Path:
    """Grouped bars: per class, the share of images with each overlay."""
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(found)), 4.5))
    kinds = list(next(iter(found.values())))
    width = 0.8 / len(kinds)
    for k, kind in enumerate(kinds):
        ax.bar(np.arange(len(found)) + k * width, [100 * v[kind] for v in found.values()], width, label=kind)
    ax.set_xticks(np.arange(len(found)) + 0.4 - width / 2, list(found), rotation=40, ha="right")
    ax.set_ylabel("images with the overlay (%)")
    ax.set_xlabel("class")
    ax.set_ylim(0, 105)
    ax.set_title("Overlays per class (a class-specific overlay is a shortcut: see kvasir audit)")
    ax.legend()
    return save_figure(fig, path)


CENSUS_SIZE = 64  # px: enough to see a box, text and the frame's outline; cheap to decode for every image


def thumbnails(data_dir: Path, items: list[tuple[str, str]]) -> np.ndarray:
    """Every image at CENSUS_SIZE x CENSUS_SIZE (uint8 NHWC), for the overlay census and the frame maps."""
    return np.stack([decode_resized(data_dir / rel, CENSUS_SIZE) for rel, _ in tqdm(items, desc="census", unit="img")])


def write_overlay_census(
    data_dir: Path, items: list[tuple[str, str]], out_dir: Path, thumbs: np.ndarray
) -> tuple[dict, str]:
    """Per class, the share of images with a green box bottom-left, a black box there, text top-left."""
    names = sorted({label for _, label in items})
    found = census_by_class(thumbs, np.array([names.index(label) for _, label in items]), names)
    table = markdown_table(
        ["class", "green box", "black box", "text top-left"],
        [[c, *(f"{100 * v:.0f}%" for v in f.values())] for c, f in found.items()],
    )
    write_text(out_dir / "overlay_census.md", f"# Overlays per class: {data_dir}\n\n{table}")
    write_json(out_dir / "overlay_census.json", found)
    plot_census(found, out_dir / "overlay_census.png")
    return found, table
