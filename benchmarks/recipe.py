"""The training recipe, side by side on one split: the default `kvasir fit`, each ingredient alone (EMA, RandAugment,
Mixup/CutMix, drop path), the recipe (all of them) and the recipe with a teacher (a bigger network trained on the same
split first) on the labeled images and on unlabeled frames. The data are synthetic frames that behave like real ones
(`kvasir synth --frames realistic`: 8 classes, outlines and moving overlays) at a size and an epoch count where a
small model from scratch does not learn them fully. `kvasir compare` gives each run's accuracy and macro-F1 with
intervals and, against the default, the paired difference with its 95% interval and McNemar's p.

    python benchmarks/recipe.py [--images 60] [--epochs 20] [--teacher_epochs 16] [--image_size 40] [--out DIR]

About 30 minutes on a 2-core CPU. A held-out check on real frames (not here) compares the recipe with the default on
one split of Kvasir v2 (docs/training.md says how)."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fitflags import fit_flags, fit_run
from kvasir_mobileone.cli import main
from kvasir_mobileone.data.synth import synth
from kvasir_mobileone.io import markdown_table

STUDENT = "mobileone_s0"
TEACHER = "resnet26d"
# the recipe: what each ingredient alone is, then all together (configs/kvasir_s3_recipe.yaml sets the same)
INGREDIENTS = {
    "EMA 0.99": ("--model.ema", "0.99"),
    "RandAugment": ("--data.augment", "randaugment"),
    "Mixup 0.2 / CutMix 1.0": ("--model.mixup", "0.2", "--model.cutmix", "1.0"),
    "drop path 0.05": ("--model.drop_path", "0.05"),
}
RECIPE = tuple(flag for flags in INGREDIENTS.values() for flag in flags)


def main_benchmark(args) -> str:
    root = Path(args.out)
    data = synth(str(root / "data"), images_per_class=args.images, seed=5, scale=0.1, frames="realistic")
    unlabeled = synth(str(root / "unlabeled"), images_per_class=args.unlabeled, seed=6, scale=0.1, frames="realistic")
    common = ["--data.val_fraction", "0.15", "--data.test_fraction", "0.25", "--trainer.logger", "none"]
    teacher_flags = fit_flags(TEACHER, epochs=args.teacher_epochs, image_size=args.image_size) + common
    teacher = root / "runs" / "teacher"
    if not (teacher / "test" / "metrics.json").is_file():
        teacher = fit_run(data, root / "runs", "teacher", flags=teacher_flags)
    split = ("--data.manifest", str(teacher / "split_manifest.csv"))
    flags = fit_flags(STUDENT, 32, lr=0.01, epochs=args.epochs, image_size=args.image_size) + common
    variants = {"default": (), **INGREDIENTS, "recipe": RECIPE}
    variants["recipe + teacher"] = (*RECIPE, "--model.teacher", str(teacher))
    variants["recipe + teacher + unlabeled frames"] = (
        *variants["recipe + teacher"],
        "--data.unlabeled_dir",
        str(unlabeled),
    )
    # what helped alone (EMA) with the teacher, without the augmentations that need longer training
    variants["EMA + teacher"] = (*INGREDIENTS["EMA 0.99"], "--model.teacher", str(teacher))
    variants["EMA + teacher + unlabeled frames"] = (*variants["EMA + teacher"], "--data.unlabeled_dir", str(unlabeled))
    runs = [teacher]
    for i, (name, extra) in enumerate(variants.items()):
        done = root / "runs" / f"v{i}"
        # a run this benchmark already finished in --out is kept (rerun it with another --out)
        finished = (done / "test" / "metrics.json").is_file()
        runs.append(done if finished else fit_run(data, root / "runs", f"v{i}", *extra, *split, flags=flags))
        print(f"{name}: {runs[-1]}", flush=True)
    main(["compare", *map(str, runs), "--out", str(root / "comparison")])
    table = json.loads((root / "comparison" / "comparison.json").read_text())
    return render(table, ["teacher", *variants], runs)


def render(table: dict, names: list[str], runs: list[Path]) -> str:
    """One row per run: accuracy and macro-F1 with intervals; against the default (B), this run (A) minus it."""
    by_run = {r["run"]: r for r in table["runs"]}
    default = runs[1].name
    pairs = {p["b"]: p for p in table["pairs"] if p["a"] == default} | {
        p["a"]: {**p, "flip": True} for p in table["pairs"] if p["b"] == default
    }
    rows = []
    for name, run in zip(names, runs, strict=True):
        r = by_run[run.name]
        cells = [
            name,
            f"{100 * r['accuracy']:.1f}% [{100 * r['accuracy_ci_low']:.1f}, {100 * r['accuracy_ci_high']:.1f}]",
            f"{r['f1_macro']:.3f} [{r['f1_macro_ci_low']:.3f}, {r['f1_macro_ci_high']:.3f}]",
        ]
        pair = pairs.get(run.name)
        if pair is None:
            cells += ["—", "—", "—"]
        else:  # the pair is (default − this run) unless flipped: shown as this run − default
            sign = 1 if pair.get("flip") else -1
            low, high = sorted(sign * v for v in pair["accuracy_difference_ci"])
            f1_low, f1_high = sorted(sign * v for v in pair["f1_macro_difference_ci"])
            cells += [
                f"{100 * sign * pair['accuracy_difference']:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}]",
                f"{sign * pair['f1_macro_difference']:+.3f} [{f1_low:+.3f}, {f1_high:+.3f}]",
                f"{pair['p_value']:.3g}",
            ]
        rows.append(cells)
    header = ["run", "accuracy [95% CI]", "macro-F1 [95% CI]", "accuracy vs default, points", "macro-F1 vs default"]
    return markdown_table([*header, "McNemar p"], rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=60, help="images per class (8 classes)")
    parser.add_argument("--unlabeled", type=int, default=40, help="unlabeled frames per class, drawn apart")
    parser.add_argument("--epochs", type=int, default=20, help="the student's (MobileOne-S0 from scratch)")
    parser.add_argument("--teacher_epochs", type=int, default=16, help="the teacher's (ResNet-26-D from scratch)")
    parser.add_argument("--image_size", type=int, default=40)
    parser.add_argument("--out", default=None, help="keep the data and runs here (default: a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        args.out = args.out or tmp
        print(main_benchmark(args))
