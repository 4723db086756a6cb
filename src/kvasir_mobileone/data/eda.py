"""`kvasir eda`: class counts (chart, markdown, JSON), a sample grid per class, a histogram of resolutions."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

from PIL import Image

from kvasir_mobileone.data.folder import scan_image_folder
from kvasir_mobileone.data.split import read_manifest, split_counts
from kvasir_mobileone.images import load_rgb
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


def eda(
    data: str = "data/kvasir-dataset-v2",
    out: str = "eda",
    manifest: str | None = None,
    samples_per_class: int = 4,
) -> Path:
    """Write class_counts.png/.md/.json, samples.png and resolutions.png into `out`."""
    data_dir, out_dir = Path(data), Path(out)
    items = scan_image_folder(data_dir)
    counts = dict(sorted(Counter(label for _, label in items).items()))
    sizes = []
    for rel, _ in items:
        with Image.open(data_dir / rel) as image:  # reads the header only
            sizes.append(image.size)
    summary: dict = {
        "total": len(items),
        "classes": counts,
        "resolutions": dict(Counter(f"{w}x{h}" for w, h in sizes)),
    }
    header, rows = ["class", "images"], [[c, n] for c, n in counts.items()] + [["total", len(items)]]
    if manifest:
        per_split = split_counts(read_manifest(manifest))
        summary["splits"] = per_split
        header += list(per_split)
        for row in rows:
            row += [per_split[s].get(row[0], 0) if row[0] != "total" else sum(per_split[s].values()) for s in per_split]
    table = markdown_table(header, rows)
    write_json(out_dir / "class_counts.json", summary)
    write_text(out_dir / "class_counts.md", f"# Class counts: {data_dir}\n\n{table}")
    plot_class_counts(counts, out_dir / "class_counts.png")
    plot_sample_grid(items, data_dir, out_dir / "samples.png", samples_per_class)
    plot_resolutions(sizes, out_dir / "resolutions.png")
    print(table)
    print(f"EDA written to {out_dir}/ (class_counts.png, samples.png, resolutions.png, class_counts.md/.json)")
    return out_dir
