"""Remedies for a shortcut in the frame, side by side on one split of synthetic frames that behave like real ones
(`kvasir synth --frames realistic`: per-class outlines whose reach varies, overlays that move, the icon's grey level
telling the class): as is, the common field of view alone, the frame swap alone (--data.frame_swap 1), both (what the
audit proposes), the common view with each image's own marks inside it inpainted (--data.clean_frame inpaint), and
a stricter view chosen from the data (--data.view_quantile auto), alone and with the swap.
For each: test accuracy, the frame swap against its same-class control, the shortcut baseline on what the model
sees, and accuracy on new frames that all share one outline and carry no icon (`--frames same`), with intervals.

    python benchmarks/frame_remedies.py [--images 80] [--epochs 12] [--image_size 64] [--seed 2] [--out DIR]
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
    "common view + frame swap 1 (the proposal)": ("--data.field_of_view", "common", "--data.frame_swap", "1"),
    "common view + clean-up (--data.clean_frame inpaint)": (
        *("--data.field_of_view", "common", "--data.clean_frame", "inpaint"),
    ),
    "common view chosen from the data (--data.view_quantile auto)": (
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


def run(args) -> None:
    root = Path(args.out or tempfile.mkdtemp())
    data = synth(
        str(root / "data"), images_per_class=args.images, seed=args.seed, scale=0.1, classes=CLASSES, frames="realistic"
    )
    shared = synth(str(root / "one-frame"), images_per_class=40, seed=9, scale=0.1, classes=CLASSES, frames="same")
    flags = fit_flags(epochs=args.epochs, test_fraction=0.3, image_size=args.image_size)
    first = None
    table = []
    light = ["--mask_regions", "[bottom-left-box]", "--occlusion_per_class", "2", "--n_resamples", "500"]
    for i, (name, extra) in enumerate(REMEDIES.items()):
        same = ("--data.manifest", str(first / "split_manifest.csv")) if first else ()
        folder = fit_run(data, root / "runs", f"remedy{i}", *extra, *same, flags=flags)
        first = first or folder
        audit = main(["audit", str(folder), *light])
        swap, baseline = audit["frame_swap"], audit["shortcut_baseline"]
        right, n = new_frames_accuracy(folder, shared)
        table.append(
            [
                name,
                pct(round(audit["accuracy"] * audit["n"]), audit["n"]),
                f"{swap['follow_donor']} vs {swap['donor_class_in_control']} (own-class paste), p = "
                f"{swap['p_value']:.2g}",
                f"{100 * baseline['accuracy']:.1f}% [{100 * baseline['accuracy_ci'][0]:.1f}, "
                f"{100 * baseline['accuracy_ci'][1]:.1f}] ({baseline['finding']})",
                pct(right, n),
                audit["verdict"].split("**")[1].removeprefix("Verdict: "),
            ]
        )
        if audit.get("proposed_fit"):
            print(f"{name}: the audit proposes {audit['proposed_fit']['command']}")
    headers = [
        "run",
        "test accuracy",
        "frame swap: donor's class",
        "baseline on what it sees",
        "new frames, one outline",
    ]
    print(markdown_table([*headers, "verdict"], table))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=80, help="per class")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--image_size", type=int, default=64, help="the icons need more than 32 px to be read")
    parser.add_argument("--seed", type=int, default=2, help="of the synthetic data")
    parser.add_argument("--out", default=None)
    run(parser.parse_args())
