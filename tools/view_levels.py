"""Every view `--data.view_quantile auto` tries, on a folder of class folders, without stopping at the first that
passes: its share of the input, the test's p (at least 0.001: 999 permutations), and per class the mean number of
frame and overlay-mark pixels left inside it per image and the share of images with any. To see why auto chose a
view, or refused.

    python tools/view_levels.py --data DIR [--image_size 224] [--interpolation bilinear]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from tqdm import tqdm

from kvasir_mobileone.data.field_of_view import STRICT_QUANTILES, VIEW_QUANTILE, count_frames
from kvasir_mobileone.data.folder import scan_image_folder
from kvasir_mobileone.images import decode_resized
from kvasir_mobileone.io import markdown_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a folder of class folders (all its images are read)")
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--interpolation", default="bilinear")
    args = parser.parse_args()
    items = scan_image_folder(args.data)
    names = sorted({c for _, c in items})
    labels = np.array([names.index(c) for _, c in items])
    pairs = (
        (decode_resized(Path(args.data) / p, args.image_size, args.interpolation), k)
        for (p, _), k in zip(tqdm(items, desc="images", unit="img"), labels, strict=True)
    )
    found = count_frames(pairs, len(names), keep_marks=True)
    rows = []
    for quantile, overlays in [(VIEW_QUANTILE, "fixed"), *((q, "any") for q in STRICT_QUANTILES)]:
        visible = ~found.hidden_at(quantile, overlays)
        left = found.left_inside(visible)[:, 0]
        per_class = [
            f"{left[labels == k].mean():.1f} ({100 * np.mean(left[labels == k] > 0):.0f}%)" for k in range(len(names))
        ]
        rows.append(
            [f"{quantile:g}", overlays, f"{100 * visible.mean():.1f}%", f"{found.dependence(visible):.2g}", *per_class]
        )
    print(f"{len(items)} images of {args.data} at {args.image_size} px; per class: mean marks left (images with any)")
    print(markdown_table(["quantile", "overlays", "view", "p", *names], rows))


if __name__ == "__main__":
    main()
