"""Two runs on images from another source (a folder of class folders): each model reads every image as it sees
them (its own mask and field of view), and the masked run's accuracy change against the plain one is judged for
non-inferiority by the paired 95% interval (Agresti-Min) and McNemar. Prints a table; writes JSON with --out.

    python tools/frame_shift.py --plain RUN --masked RUN --data DIR [--margin 0.05] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from kvasir_mobileone.data.folder import scan_image_folder
from kvasir_mobileone.evaluation.audit import load_pixels, predict_pixels
from kvasir_mobileone.evaluation.stats import matched_pairs_interval, mcnemar, wilson_interval
from kvasir_mobileone.io import markdown_table, write_json
from kvasir_mobileone.models.loading import open_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plain", required=True)
    parser.add_argument("--masked", required=True)
    parser.add_argument("--data", required=True, help="a folder of class folders (the runs' classes)")
    parser.add_argument("--margin", type=float, default=0.05, help="the largest accuracy loss called non-inferior")
    parser.add_argument("--out")
    args = parser.parse_args()
    items = scan_image_folder(args.data)
    right, rows = {}, []
    for name, run in (("plain", args.plain), ("masked", args.masked)):
        trained = open_run(run)
        names = trained.module.class_names
        targets = np.array([names.index(label) for _, label in items])
        pixels = load_pixels(
            Path(args.data),
            [p for p, _ in items],
            trained.model_input.image_size,
            trained.model_input.interpolation,
            name,
        )
        seen = np.stack([trained.model_input.prepare(p) for p in pixels])
        right[name] = predict_pixels(trained.module, seen, trained.model_input).argmax(axis=1) == targets
        low, high = wilson_interval(int(right[name].sum()), len(targets))
        rows.append([name, run, f"{100 * right[name].mean():.2f} [{100 * low:.2f}, {100 * high:.2f}]"])
    only_masked = int(np.sum(right["masked"] & ~right["plain"]))
    only_plain = int(np.sum(~right["masked"] & right["plain"]))
    low, high = matched_pairs_interval(only_masked, only_plain, len(items))
    test = mcnemar(right["masked"], right["plain"])
    result = {
        "n": len(items),
        "accuracy": {k: float(v.mean()) for k, v in right.items()},
        "masked_minus_plain": float(right["masked"].mean() - right["plain"].mean()),
        "masked_minus_plain_ci": [low, high],
        "right_only_masked": only_masked,
        "right_only_plain": only_plain,
        "mcnemar_p": test["p_value"],
        "margin": args.margin,
        "non_inferior": low > -args.margin,
    }
    print(f"{len(items)} images of {args.data}:")
    print(markdown_table(["run", "folder", "accuracy % [95% CI]"], rows))
    print(
        f"masked − plain: {100 * result['masked_minus_plain']:+.2f} points [{100 * low:+.2f}, {100 * high:+.2f}] "
        f"(right only masked {only_masked}, only plain {only_plain}; McNemar p = {test['p_value']:.2g}); "
        f"non-inferior at a {100 * args.margin:g}-point margin: {'yes' if result['non_inferior'] else 'no'}."
    )
    if args.out:
        write_json(args.out, result)
        print(json.dumps(result))


if __name__ == "__main__":
    main()
