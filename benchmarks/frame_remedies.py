"""Remedies for a shortcut in the frame, side by side on synthetic frames that behave like real ones (`kvasir synth
--frames realistic`: per-class outlines whose reach varies, overlays that move, the icon's grey level telling the
class), each remedy on the same split, and on one split per seed of the data: as is, the common field of view
alone, the frame swap alone (--data.frame_swap 1), both, the common view with each image's own marks inside it
inpainted (--data.clean_frame inpaint), and the view chosen from the data (--data.view_quantile auto: what the
audit proposes), alone and with the swap.
For each: test accuracy, the frame swap against its same-class control, the shortcut baseline on what the model
sees, and accuracy on new frames that all share one outline and carry no icon (`--frames same`), with intervals;
then, over all splits, in how many the audit finds no dependence, with the test images pooled. About 5 minutes a
seed on a 2-core CPU.

    python benchmarks/frame_remedies.py [--images 80] [--epochs 12] [--image_size 64] [--seeds 2 3 4] [--out DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fitflags import fit_flags, fit_run
from kvasir_mobileone.cli import main
from kvasir_mobileone.data.folder import scan_image_folder
from kvasir_mobileone.data.synth import synth
from kvasir_mobileone.evaluation.audit import load_pixels, predict_pixels
from kvasir_mobileone.evaluation.stats import wilson_interval
from kvasir_mobileone.io import markdown_table
from kvasir_mobileone.models.loading import open_run

CLASSES = ("dyed-lifted-polyps", "esophagitis", "polyps")
REMEDIES = {
    "as is": (),
    "common view": ("--data.field_of_view", "common"),
    "frame swap 1": ("--data.frame_swap", "1"),
    "common view + frame swap 1": ("--data.field_of_view", "common", "--data.frame_swap", "1"),
    "common view + clean-up (--data.clean_frame inpaint)": (
        *("--data.field_of_view", "common", "--data.clean_frame", "inpaint"),
    ),
    "common view chosen from the data (the proposal)": (
        *("--data.field_of_view", "common", "--data.view_quantile", "auto"),
    ),
    "common view chosen from the data + frame swap 1": (
        *("--data.field_of_view", "common", "--data.frame_swap", "1", "--data.view_quantile", "auto"),
    ),
}


def pct(k: int, n: int) -> str:
    low, high = wilson_interval(k, n)
    return f"{100 * k / n:.1f}% [{100 * low:.1f}, {100 * high:.1f}]"


def new_frames_accuracy(run: Path, data: Path) -> tuple[int, int]:
    trained = open_run(run)
    names, model_input = trained.module.class_names, trained.model_input
    items = scan_image_folder(data)
    pixels = load_pixels(data, [p for p, _ in items], model_input.image_size, model_input.interpolation, "new frames")
    pixels = np.stack([model_input.prepare(p) for p in pixels])
    predicted = predict_pixels(trained.module, pixels, model_input).argmax(axis=1)
    return int(np.sum(predicted == np.array([names.index(c) for _, c in items]))), len(items)


def one_split(root: Path, seed: int, args) -> dict[str, dict]:
    """Every remedy trained and audited on one split of data drawn with `seed`: per remedy, its counts and cells."""
    data = synth(
        str(root / "data"), images_per_class=args.images, seed=seed, scale=0.1, classes=CLASSES, frames="realistic"
    )
    shared = synth(str(root / "one-frame"), images_per_class=40, seed=9, scale=0.1, classes=CLASSES, frames="same")
    flags = fit_flags(epochs=args.epochs, test_fraction=0.3, image_size=args.image_size)
    first = None
    found = {}
    light = ["--mask_regions", "[bottom-left-box]", "--occlusion_per_class", "2", "--n_resamples", "500"]
    for i, (name, extra) in enumerate(REMEDIES.items()):
        same = ("--data.manifest", str(first / "split_manifest.csv")) if first else ()
        folder = fit_run(data, root / "runs", f"remedy{i}", *extra, *same, flags=flags)
        first = first or folder
        audit = main(["audit", str(folder), *light])
        swap, baseline = audit["frame_swap"], audit["shortcut_baseline"]
        right, n = new_frames_accuracy(folder, shared)
        verdict = audit["verdict"].split("**")[1].removeprefix("Verdict: ")
        found[name] = {
            "correct": round(audit["accuracy"] * audit["n"]),
            "n": audit["n"],
            "new_right": right,
            "new_n": n,
            "holds": not swap.get("follows") and verdict.startswith("no dependence"),
            "cells": [
                f"{swap['follow_donor']} vs {swap['donor_class_in_control']} (own-class paste), p = "
                f"{swap['p_value']:.2g}",
                f"{100 * baseline['accuracy']:.1f}% [{100 * baseline['accuracy_ci'][0]:.1f}, "
                f"{100 * baseline['accuracy_ci'][1]:.1f}] ({baseline['finding']})",
                verdict,
            ],
        }
        if audit.get("proposed_fit"):
            print(f"seed {seed}, {name}: the audit proposes {audit['proposed_fit']['command']}")
    return found


def run(args) -> None:
    root = Path(args.out or tempfile.mkdtemp())
    splits = {seed: one_split(root / f"seed{seed}", seed, args) for seed in args.seeds}
    for seed, found in splits.items():
        print(f"\nseed {seed} (one split, {next(iter(found.values()))['n']} test images):")
        rows = [
            [
                name,
                pct(f["correct"], f["n"]),
                f["cells"][0],
                f["cells"][1],
                pct(f["new_right"], f["new_n"]),
                f["cells"][2],
            ]
            for name, f in found.items()
        ]
        headers = ["run", "test accuracy", "frame swap: donor's class", "baseline on what it sees", "new frames"]
        print(markdown_table([*headers, "verdict"], rows))
    summary = []
    for name in REMEDIES:
        runs = [splits[seed][name] for seed in args.seeds]
        summary.append(
            [
                name,
                f"{sum(r['holds'] for r in runs)} of {len(runs)}",
                pct(sum(r["correct"] for r in runs), sum(r["n"] for r in runs)),
                pct(sum(r["new_right"] for r in runs), sum(r["new_n"] for r in runs)),
            ]
        )
    print(f"\nAll {len(args.seeds)} splits (seeds {', '.join(map(str, args.seeds))}), test images pooled:")
    print(markdown_table(["run", "no dependence (splits)", "test accuracy", "new frames, one outline"], summary))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=80, help="per class")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--image_size", type=int, default=64, help="the icons need more than 32 px to be read")
    parser.add_argument("--seeds", type=int, nargs="+", default=[2, 3, 4], help="of the synthetic data, a split each")
    parser.add_argument("--out", default=None)
    run(parser.parse_args())
