"""`kvasir cv`: stratified (and duplicate-group-aware) k-fold cross-validation of any `fit` configuration."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

from kvasir_mobileone.commands.fit import fit
from kvasir_mobileone.data.config import DataConfig
from kvasir_mobileone.data.folds import cv_manifests, fold_ids_of
from kvasir_mobileone.data.split import write_manifest
from kvasir_mobileone.evaluation.cross_validation import summarize_folds
from kvasir_mobileone.models.classifier import ModelConfig
from kvasir_mobileone.models.trainer import TrainerConfig
from kvasir_mobileone.runs import FOLDS_KEY, CvFolder, absolute


def cv(
    folds: int = 5,
    data: DataConfig = DataConfig(),
    model: ModelConfig = ModelConfig(),
    trainer: TrainerConfig = TrainerConfig(),
) -> Path:
    """Train and test one model per fold; writes every fold's run, mean ± std per metric, and pooled predictions.

    With --data.official_split (e.g. hyper-kvasir-5fold) the folds are the official ones and --folds is ignored."""
    fold_ids = fold_ids_of(data, folds)
    folds = len(fold_ids)
    name = trainer.run_name or f"cv{folds}-{dt.datetime.now():%Y%m%d-%H%M%S}-{model.name}"
    cv_dir = Path(trainer.runs_dir).resolve() / name
    cv_dir.mkdir(parents=True, exist_ok=True)
    data = dataclasses.replace(data, data_dir=absolute(data.data_dir))
    sections = {"data": data, "model": model, "trainer": trainer}
    folder = CvFolder(cv_dir)
    folder.write_config({FOLDS_KEY: folds} | {k: dataclasses.asdict(v) for k, v in sections.items()})
    manifests, official_lines = cv_manifests(data, fold_ids)
    if official_lines:
        print("\n".join(official_lines))
    fold_dirs = []
    for position, (k, rows) in enumerate(zip(fold_ids, manifests, strict=True)):
        manifest = write_manifest(folder.fold_manifest(k), rows)
        print(f"\n=== fold {k} ({position + 1}/{folds}) ===")
        fold_dirs.append(
            fit(
                dataclasses.replace(data, manifest=str(manifest), fold=k),
                model,
                dataclasses.replace(trainer, runs_dir=str(cv_dir), run_name=folder.fold_name(k)),
                test_after=True,
            )
        )
    print(summarize_folds(cv_dir, fold_dirs, fold_ids, model.name))
    print(f"Cross-validation folder: {cv_dir}")
    return cv_dir
