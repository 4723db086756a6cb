"""The summary of a `kvasir cv` folder: each metric's mean and standard deviation over the folds, a table of the
folds with their intervals, and the report of the pooled out-of-fold predictions (what `kvasir compare` reads)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from kvasir_mobileone.errors import UserError
from kvasir_mobileone.evaluation.report import accuracy_text, balanced_text, evaluate, f1_text, write_report
from kvasir_mobileone.io import markdown_table, write_json, write_text
from kvasir_mobileone.metrics import METRICS
from kvasir_mobileone.runs import FOLDS_KEY, CvFolder, RunFolder

SUMMARY_METRICS = tuple(METRICS)  # every published metric (kvasir_mobileone/metrics.py)


def per_fold_table(per_fold: list[dict], fold_ids: list[int]) -> str:
    """One row per fold: its test images, accuracy and macro-F1 with their intervals, and accuracy on the fold's
    leak-free test images (no near-duplicate in train/val) when they differ."""
    rows = []
    for k, m in zip(fold_ids, per_fold, strict=True):
        clean = m.get("leak_free")
        if not clean:
            leak_free = "not recorded"
        elif clean.get("same_as_all"):
            leak_free = "all test images"
        elif "accuracy" in clean:
            leak_free = f"{clean['n']} images: {accuracy_text(clean)}"
        else:
            leak_free = "none"
        balanced = balanced_text(m) if "balanced_accuracy_ci" in m else "not recorded"
        rows.append([k, m["n"], accuracy_text(m), f1_text(m), balanced, leak_free])
    return markdown_table(
        ["fold", "test images", "Accuracy [95% CI]", "macro-F1 [95% CI]", "balanced accuracy [95% CI]", "leak-free"],
        rows,
    )


def pooled_predictions(fold_dirs: list[Path], class_names: list[str]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Every image's out-of-fold prediction: each image is in exactly one fold's test split."""
    found = [RunFolder(d).test.read_predictions() for d in fold_dirs]
    for fold_dir, f in zip(fold_dirs, found, strict=True):
        if f.class_names != class_names:
            raise UserError(f"{fold_dir} predicts {f.class_names}, not {class_names}: run the cv again.")
    paths = [p for f in found for p in f.paths]
    return paths, np.concatenate([f.probs for f in found]), np.concatenate([f.targets for f in found])


def summarize_folds(cv_dir: Path, fold_dirs: list[Path], fold_ids: list[int], model_name: str) -> str:
    """summary.json, summary.md and the pooled report of a cv folder whose folds have run; the summary's table."""
    folder, folds = CvFolder(cv_dir), len(fold_ids)
    per_fold = [json.loads(RunFolder(d).test.metrics.read_text()) for d in fold_dirs]
    class_names = per_fold[0]["class_names"]
    summary = {}
    for key in SUMMARY_METRICS:
        values = [m[key] for m in per_fold if m.get(key) is not None]
        if values:
            summary[key] = {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)), "folds": values}
    paths, probs, targets = pooled_predictions(fold_dirs, class_names)
    pooled = evaluate(probs, targets, class_names)
    label = f"{model_name} ({folds}-fold CV, out-of-fold)"
    write_report(RunFolder(cv_dir).test_dir, pooled, class_names, label, probs, targets, paths)
    write_json(folder.summary_json, {FOLDS_KEY: folds, "per_metric": summary, "fold_runs": [str(d) for d in fold_dirs]})
    table = markdown_table(
        ["metric", "mean", "std", *[f"fold {k}" for k in fold_ids]],
        [[key, v["mean"], v["std"], *v["folds"]] for key, v in summary.items()],
    )
    table += "\n" + per_fold_table(per_fold, fold_ids)
    write_text(
        folder.summary_md,
        f"# {folds}-fold cross-validation: {model_name}\n\n{table}\n"
        f"Pooled out-of-fold predictions of all {len(paths)} images: {RunFolder(cv_dir).test.report} "
        "(what `kvasir compare` uses).\n",
    )
    return table
