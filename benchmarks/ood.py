"""The out-of-distribution detectors side by side on the same images: a model trained on 4 synthetic Kvasir classes,
its test images against the 4 held-out synthetic classes (near: endoscopy of a kind it never learned) and against
the report's set of images that are not endoscopy (far: data/foreign.py). Each detector is fitted on the run's
training features (the input check on the images' colour and texture statistics) with its threshold set on val at
5% false alarms, as `kvasir fit` does; `auto` chooses on the selection set, other sources than the ones measured
here. Prints AUROC with intervals and flag rates for near and far, and the test images' false alarms.

    python benchmarks/ood.py [--model mobileone_s0] [--epochs 30] [--image_size 48] [--outlier_exposure 0.5] [--out DIR]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from kvasir_mobileone.answers import NETWORK_DETECTORS, UncertaintyConfig
from kvasir_mobileone.cli import main
from kvasir_mobileone.data.foreign import write_foreign
from kvasir_mobileone.data.synth import KVASIR_CLASSES, synth
from kvasir_mobileone.deploy.runtime import load
from kvasir_mobileone.evaluation.uncertainty import (
    Outputs,
    auroc,
    auroc_interval,
    detector_name,
    fit_uncertainty,
    flags_of,
    rate,
    scores_of,
)
from kvasir_mobileone.io import markdown_table, read_csv
from kvasir_mobileone.models.backbone import head_weights
from kvasir_mobileone.runs import RunFolder


def outputs(predictor, paths, targets=None, batch=64) -> Outputs:
    logits, features, statistics = [], [], []
    for i in range(0, len(paths), batch):
        x = np.stack([predictor.model_input.read(p)[0] for p in paths[i : i + batch]])
        lo, fe = predictor.outputs(x)
        logits.append(lo)
        features.append(fe)
        statistics.append(predictor.model_input.statistics(x))
    return Outputs(np.concatenate(logits), np.concatenate(features), targets, np.concatenate(statistics))


def pct(r) -> str:
    return f"{100 * r['rate']:.1f}% [{100 * r['ci'][0]:.1f}, {100 * r['ci'][1]:.1f}] ({r['count']}/{r['n']})"


def auroc_text(inside, other) -> str:
    auc = auroc(inside, other)
    low, high = auroc_interval(auc, len(other), len(inside))
    return f"{auc:.3f} [{low:.3f}, {high:.3f}]"


def run(args) -> None:
    root = Path(args.out)
    train_dir, held_dir = root / "train", root / "held_out"
    if not train_dir.is_dir():
        synth(str(train_dir), images_per_class=args.images_per_class, seed=2, scale=0.1, classes=KVASIR_CLASSES[:4])
        synth(str(held_dir), images_per_class=60, seed=3, scale=0.1, classes=KVASIR_CLASSES[4:])
    run_dir = root / "runs" / (args.model + (f"_oe{args.outlier_exposure:g}" if args.outlier_exposure else ""))
    if not RunFolder(run_dir).is_run():
        main(
            ["fit", "--data.data_dir", str(train_dir), "--data.image_size", str(args.image_size)]
            + ["--data.batch_size", "16", "--data.num_workers", "0", "--data.val_fraction", "0.2"]
            + ["--data.test_fraction", "0.2", "--model.name", args.model, "--model.pretrained", "false"]
            + ["--model.lr", "0.003", "--model.lr_reference_batch", "16", "--trainer.precision", "32-true"]
            + ["--trainer.max_epochs", str(args.epochs), "--trainer.logger", "none"]
            + ["--model.outlier_exposure", str(args.outlier_exposure)]
            + ["--trainer.runs_dir", str(run_dir.parent), "--trainer.run_name", run_dir.name]
        )
    predictor = load(str(run_dir))
    names = predictor.class_names
    rows = read_csv(RunFolder(run_dir).manifest)
    split = {
        s: outputs(
            predictor,
            [train_dir / r["path"] for r in rows if r["split"] == s],
            np.array([names.index(r["label"]) for r in rows if r["split"] == s]),
        )
        for s in ("train", "val", "test")
    }
    held = outputs(predictor, sorted(held_dir.rglob("*.jpg")))
    with tempfile.TemporaryDirectory() as tmp:
        foreign = outputs(predictor, write_foreign(tmp))
        selection = outputs(predictor, write_foreign(Path(tmp) / "selection", selection=True))
    head = head_weights(predictor.network())
    chosen = fit_uncertainty(split["train"], split["val"], UncertaintyConfig(), selection, head=head)
    table = []
    for name in [*NETWORK_DETECTORS, "input", detector_name(chosen)]:
        found = chosen if name == detector_name(chosen) else fitted_alone(name, split, head)
        test, near, far = (scores_of(found, o) for o in (split["test"], held, foreign))
        table.append(
            [f"**{name}**" if name == detector_name(chosen) else name]
            + [auroc_text(test, near), auroc_text(test, far)]
            + [pct(rate(flags_of(found, o))) for o in (split["test"], held, foreign)]
            + [f"{chosen.fitted['selection_auroc'][name]:.3f}" if name in chosen.fitted["selection_auroc"] else "—"]
        )
    test_acc = float(np.mean(split["test"].correct))
    config = RunFolder(run_dir).read_config()
    size, epochs = config["data"]["image_size"], config["trainer"]["max_epochs"]
    print(
        f"\n{args.model} at {size} px, {epochs} epochs from scratch"
        + (f" with outlier exposure {args.outlier_exposure:g}" if args.outlier_exposure else "")
        + ", test accuracy "
        f"{100 * test_acc:.1f}% on {len(split['test'])} images; {len(split['train'])} train, {len(split['val'])} val, "
        f"{len(held)} held-out-class (near) and {len(foreign)} not-endoscopy (far, the report's set) images; "
        f"auto chose on {len(selection)} images of other sources. Thresholds on val at 5% false alarms (the pair: "
        "2.5% each).\n"
    )
    print(
        markdown_table(
            ["detector", "AUROC near: test vs held-out classes", "AUROC far: test vs not endoscopy"]
            + ["test flagged (false alarm)", "held-out flagged", "not-endoscopy flagged", "selection AUROC (auto)"],
            table,
        )
    )
    print(f"auto chose {chosen.detector}; the default flags an image when it or the input check does.")


def fitted_alone(name: str, split: dict, head):
    """One detector fitted on train, its threshold on val at 5%: the figures of `--uncertainty.detector NAME
    --uncertainty.input_check false` (input: the input check alone)."""
    config = UncertaintyConfig(detector=name, input_check=False)
    return fit_uncertainty(split["train"], split["val"], config, head=head)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mobileone_s0")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--image_size", type=int, default=48)
    parser.add_argument("--images_per_class", type=int, default=150)
    parser.add_argument("--outlier_exposure", type=float, default=0.0, help="--model.outlier_exposure of the fit")
    parser.add_argument("--out", default="ood_benchmark")
    run(parser.parse_args())
