"""`kvasir cv`: stratified (and duplicate-group-aware) k-fold cross-validation of any `fit` configuration."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from kvasir_mobileone.commands.fit import fit
from kvasir_mobileone.data.check import check_folder
from kvasir_mobileone.data.dataset import DataConfig
from kvasir_mobileone.data.official import apply_official_split, official_split_path, read_official_split
from kvasir_mobileone.data.split import read_exclusions, write_manifest
from kvasir_mobileone.evaluation.report import accuracy_text, balanced_text, evaluate, f1_text, write_report
from kvasir_mobileone.io import markdown_table, read_csv, write_json, write_text
from kvasir_mobileone.models.classifier import ModelConfig
from kvasir_mobileone.models.trainer import TrainerConfig
from kvasir_mobileone.runs import RunFolder, absolute

SUMMARY_METRICS = ("accuracy", "balanced_accuracy", "top3", "top5", "f1_micro", "f1_macro", "mcc", "ece")


def fold_manifests(
    items: list[tuple[str, str]], groups: dict[str, int], folds: int, val_fraction: float, seed: int
) -> list[list[dict[str, str]]]:
    """For each fold: its images are the test split; val is carved from the rest; duplicate groups stay together."""
    labels = np.array([label for _, label in items])
    group_ids = np.array([groups[path] for path, _ in items])
    outer = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    manifests = []
    for rest, test in outer.split(np.zeros(len(items)), labels, group_ids):
        # val_fraction of all images, taken as one fold of an inner group-aware stratified split of the rest
        inner_folds = max(2, round(len(rest) / max(1.0, val_fraction * len(items))))
        inner = StratifiedGroupKFold(n_splits=inner_folds, shuffle=True, random_state=seed)
        train_pos, val_pos = next(inner.split(np.zeros(len(rest)), labels[rest], group_ids[rest]))
        split = {int(i): "test" for i in test} | {int(rest[i]): "train" for i in train_pos}
        split |= {int(rest[i]): "val" for i in val_pos}
        manifests.append([{"path": p, "label": c, "split": split[i]} for i, (p, c) in enumerate(items)])
    return manifests


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
    paths, probs, targets = [], [], []
    for fold_dir in fold_dirs:
        for row in read_csv(RunFolder(fold_dir).test.predictions):
            paths.append(row["path"])
            probs.append([float(row[f"p_{c}"]) for c in class_names])
            targets.append(class_names.index(row["label"]))
    return paths, np.array(probs), np.array(targets)


def cv(
    folds: int = 5,
    data: DataConfig = DataConfig(),
    model: ModelConfig = ModelConfig(),
    trainer: TrainerConfig = TrainerConfig(),
) -> Path:
    """Train and test one model per fold; writes every fold's run, mean ± std per metric, and pooled predictions.

    With --data.official_split (e.g. hyper-kvasir-5fold) the folds are the official ones and --folds is ignored."""
    fold_ids = list(range(folds))
    if data.official_split:
        _, source = official_split_path(data.official_split)
        fold_ids = sorted({fold for _, fold in read_official_split(source).values()})
        folds = len(fold_ids)
    name = trainer.run_name or f"cv{folds}-{dt.datetime.now():%Y%m%d-%H%M%S}-{model.name}"
    cv_dir = Path(trainer.runs_dir).resolve() / name
    cv_dir.mkdir(parents=True, exist_ok=True)
    data = dataclasses.replace(data, data_dir=absolute(data.data_dir))
    sections = {"data": data, "model": model, "trainer": trainer}
    RunFolder(cv_dir).write_config({"folds": folds} | {k: dataclasses.asdict(v) for k, v in sections.items()})
    report = check_folder(data.data_dir, data.near_duplicate_bits, cache_dir=data.cache_dir)
    if data.exclude:  # left out before the folds are made (fit leaves them out of each fold's split too)
        exclude = read_exclusions(data.exclude, data.data_dir)
        report.items = [(rel, label) for rel, label in report.items if rel not in exclude]
    if data.official_split:
        manifests = []
        for k in fold_ids:
            rows, official = apply_official_split(
                report.items, data.official_split, k, report.group_of(), data.val_fraction, data.seed
            )
            manifests.append(rows)
        print("\n".join(official.lines()[1:]))
    else:
        manifests = fold_manifests(report.items, report.group_of(), folds, data.val_fraction, data.seed)
    fold_dirs = []
    for position, (k, rows) in enumerate(zip(fold_ids, manifests, strict=True)):
        manifest = write_manifest(cv_dir / f"fold{k}_manifest.csv", rows)
        print(f"\n=== fold {k} ({position + 1}/{folds}) ===")
        fold_dirs.append(
            fit(
                dataclasses.replace(data, manifest=str(manifest), fold=k),
                model,
                dataclasses.replace(trainer, runs_dir=str(cv_dir), run_name=f"fold{k}"),
                test_after=True,
            )
        )
    per_fold = [json.loads(RunFolder(d).test.metrics.read_text()) for d in fold_dirs]
    class_names = per_fold[0]["class_names"]
    summary = {}
    for key in SUMMARY_METRICS:
        values = [m[key] for m in per_fold if m.get(key) is not None]
        if values:
            summary[key] = {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)), "folds": values}
    paths, probs, targets = pooled_predictions(fold_dirs, class_names)
    pooled = evaluate(probs, targets, class_names)
    label = f"{model.name} ({folds}-fold CV, out-of-fold)"
    write_report(RunFolder(cv_dir).test_dir, pooled, class_names, label, probs, targets, paths)
    write_json(
        cv_dir / "cv_summary.json", {"folds": folds, "per_metric": summary, "fold_runs": [str(d) for d in fold_dirs]}
    )
    table = markdown_table(
        ["metric", "mean", "std", *[f"fold {k}" for k in fold_ids]],
        [[key, v["mean"], v["std"], *v["folds"]] for key, v in summary.items()],
    )
    table += "\n" + per_fold_table(per_fold, fold_ids)
    write_text(
        cv_dir / "cv_summary.md",
        f"# {folds}-fold cross-validation: {model.name}\n\n{table}\n"
        f"Pooled out-of-fold predictions of all {len(paths)} images: {RunFolder(cv_dir).test.report} "
        "(what `kvasir compare` uses).\n",
    )
    print(table)
    print(f"Cross-validation folder: {cv_dir}")
    return cv_dir
