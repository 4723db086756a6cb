"""The out-of-distribution detectors side by side on the same images: a model trained on 4 synthetic Kvasir classes,
its test images against the 4 held-out synthetic classes and against images that are not endoscopy
(data/foreign.py). Each detector is fitted on the run's training features with its threshold set on val at 5%
false alarms, as `kvasir fit` does; prints AUROC with intervals, false alarms and flag rates, then the test
report's abstention and coverage figures. What chose answers.DEFAULT_DETECTOR.

    python benchmarks/ood.py [--model mobileone_s0] [--epochs 30] [--image_size 48] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from kvasir_mobileone.answers import DETECTORS, Uncertainty, UncertaintyConfig
from kvasir_mobileone.cli import main
from kvasir_mobileone.data.foreign import FIVE, write_foreign
from kvasir_mobileone.data.synth import KVASIR_CLASSES, synth
from kvasir_mobileone.deploy.runtime import load
from kvasir_mobileone.evaluation.uncertainty import (
    Outputs,
    auroc,
    auroc_interval,
    conformal_quantile,
    fit_detector,
    fit_uncertainty,
    rate,
)
from kvasir_mobileone.io import markdown_table, read_csv
from kvasir_mobileone.runs import RunFolder


def outputs(predictor, paths, targets=None, batch=64) -> Outputs:
    logits, features = [], []
    for i in range(0, len(paths), batch):
        x = np.stack([predictor.model_input.read(p)[0] for p in paths[i : i + batch]])
        lo, fe = predictor.outputs(x)
        logits.append(lo)
        features.append(fe)
    return Outputs(np.concatenate(logits), np.concatenate(features), targets)


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
    run_dir = root / "runs" / args.model
    if not RunFolder(run_dir).is_run():
        main(
            ["fit", "--data.data_dir", str(train_dir), "--data.image_size", str(args.image_size)]
            + ["--data.batch_size", "16", "--data.num_workers", "0", "--data.val_fraction", "0.2"]
            + ["--data.test_fraction", "0.2", "--model.name", args.model, "--model.pretrained", "false"]
            + ["--model.lr", "0.003", "--model.lr_reference_batch", "16", "--trainer.precision", "32-true"]
            + ["--trainer.max_epochs", str(args.epochs), "--trainer.logger", "none"]
            + ["--trainer.runs_dir", str(run_dir.parent), "--trainer.run_name", args.model]
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
        paths = write_foreign(tmp)
        foreign = outputs(predictor, paths)
        five = np.array([p.stem in FIVE for p in paths])
        selection = outputs(predictor, write_foreign(Path(tmp) / "selection", seed=1, whole=False))
    auto = fit_uncertainty(split["train"], split["val"], UncertaintyConfig(), selection)
    table = []
    for name in DETECTORS:
        arrays, k = fit_detector(name, split["train"])
        found = Uncertainty(name, 0.05, None, 0.05, None, 0.9, None, k, arrays)
        threshold = conformal_quantile(found.ood_scores(split["val"].logits, split["val"].features), 0.95)
        scores = {s: found.ood_scores(o.logits, o.features) for s, o in (("test", split["test"]), ("held", held))}
        scores["foreign"] = found.ood_scores(foreign.logits, foreign.features)
        table.append(
            [name]
            + [auroc_text(scores["test"], scores[o]) for o in ("held", "foreign")]
            + [pct(rate(scores[s] > threshold)) for s in ("test", "held", "foreign")]
            + [f"{int((scores['foreign'][five] > threshold).sum())} of 5"]
            + [f"{auto.fitted['selection_auroc'][name]:.3f}" + (" (chosen)" if name == auto.detector else "")]
        )
    test_acc = float(np.mean(split["test"].correct))
    config = RunFolder(run_dir).read_config()
    size, epochs = config["data"]["image_size"], config["trainer"]["max_epochs"]
    print(
        f"\n{args.model} at {size} px, {epochs} epochs from scratch, test accuracy "
        f"{100 * test_acc:.1f}% on {len(split['test'])} images; {len(split['train'])} train, {len(split['val'])} val, "
        f"{len(held)} held-out-class and {len(foreign)} not-endoscopy images. Thresholds on val at 5% false alarms.\n"
    )
    print(
        markdown_table(
            ["detector", "AUROC test vs held-out classes", "AUROC test vs not endoscopy", "test flagged (false alarm)"]
            + ["held-out flagged", "not-endoscopy flagged", "the five flagged", "auto's AUROC (val vs other seed)"],
            table,
        )
    )
    chosen = auto.ood_scores(foreign.logits, foreign.features) > auto.ood_threshold
    names_five = [p.stem for p, f in zip(paths, five, strict=True) if f]
    print(
        f"auto chose {auto.detector}; of the five, flagged: "
        + ", ".join(f"{n} {'yes' if c else 'NO'}" for n, c in zip(names_five, chosen[five], strict=True))
    )
    metrics = json.loads(RunFolder(run_dir).test.metrics.read_text())["uncertainty"]
    conformal, selective = metrics["conformal"], metrics["selective"]
    print(
        f"Prediction sets (target 90%): coverage {pct(conformal['coverage'])}, mean size "
        f"{conformal['mean_size']:.2f}. Abstention threshold: {selective['threshold']}; AURC {selective['aurc']}."
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mobileone_s0")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--image_size", type=int, default=48)
    parser.add_argument("--images_per_class", type=int, default=150)
    parser.add_argument("--out", default="ood_benchmark")
    run(parser.parse_args())
