"""`kvasir eda`: class counts, sample grid, resolutions and the overlay census of an image folder."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from kvasir_mobileone.data.eda import (
    plot_class_counts,
    plot_resolutions,
    plot_sample_grid,
    thumbnails,
    write_overlay_census,
)
from kvasir_mobileone.data.folder import find_class_folders, scan_image_folder
from kvasir_mobileone.data.split import read_manifest, split_counts
from kvasir_mobileone.evaluation.frames import frame_report
from kvasir_mobileone.io import markdown_table, write_json, write_text


def eda(
    data_dir: str = "data/kvasir-dataset-v2",
    out: str = "eda",
    manifest: str | None = None,
    samples_per_class: int = 4,
    census: bool = True,
) -> Path:
    """Draw the class counts, sample grid and image sizes of a folder (with --census, its frames).

    Write class_counts.png/.md/.json, samples.png, resolutions.png and (with --census) the overlay census and the
    frame maps (where each class's frames are frame and overlay, and how well that alone predicts the class)."""
    data_dir, out_dir = Path(data_dir), Path(out)
    layout = find_class_folders(data_dir).describe()
    print(f"Found a {layout}.")
    items = scan_image_folder(data_dir)
    counts = dict(sorted(Counter(label for _, label in items).items()))
    sizes = []
    for rel, _ in items:
        with Image.open(data_dir / rel) as image:  # reads the header only
            sizes.append(image.size)
    summary: dict = {
        "layout": layout,
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
    write_text(
        out_dir / "class_counts.md", f"# Class counts: {data_dir}\n\n{layout[0].upper()}{layout[1:]}.\n\n{table}"
    )
    plot_class_counts(counts, out_dir / "class_counts.png")
    plot_sample_grid(items, data_dir, out_dir / "samples.png", samples_per_class)
    plot_resolutions(sizes, out_dir / "resolutions.png")
    print(table)
    if census:
        thumbs = thumbnails(data_dir, items)
        print(write_overlay_census(data_dir, items, out_dir, thumbs)[1])
        names = sorted(counts)
        print(frame_report(thumbs, np.array([names.index(label) for _, label in items]), names, out_dir)["line"])
    extra = ", overlay_census, frame_maps" if census else ""
    print(f"EDA written to {out_dir}/ (class_counts, samples, resolutions{extra})")
    return out_dir
