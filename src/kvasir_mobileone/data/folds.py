"""The folds of `kvasir cv`: each fold's images are its test split, val is carved from the rest, near-duplicate
groups stay together; or the folds of an official split. The folder is checked once, and --data.exclude applied, as
`fit` checks and excludes."""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from kvasir_mobileone.data.check import check_folder, drop_excluded
from kvasir_mobileone.data.config import DataConfig
from kvasir_mobileone.data.official import apply_official_split, official_split_path, read_official_split
from kvasir_mobileone.data.split import read_exclusions


def fold_ids_of(data: DataConfig, folds: int) -> list[int]:
    """The fold numbers: 0..folds-1, or those of --data.official_split."""
    if not data.official_split:
        return list(range(folds))
    _, source = official_split_path(data.official_split)
    return sorted({fold for _, fold in read_official_split(source).values()})


def cv_manifests(data: DataConfig, fold_ids: list[int]) -> tuple[list[list[dict[str, str]]], list[str]]:
    """(one split manifest per fold, lines saying which official split was used: empty without one)."""
    report = check_folder(data.data_dir, data.near_duplicate_bits, cache_dir=data.cache_dir)
    if data.exclude:  # left out before the folds are made (fit leaves them out of each fold's split too)
        drop_excluded(report, read_exclusions(data.exclude, data.data_dir))
    if not data.official_split:
        return fold_manifests(report.items, report.group_of(), len(fold_ids), data.val_fraction, data.seed), []
    manifests, official = [], None
    for k in fold_ids:
        rows, official = apply_official_split(
            report.items, data.official_split, k, report.group_of(), data.val_fraction, data.seed
        )
        manifests.append(rows)
    return manifests, official.lines()[1:]


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
