"""The network's logits and pooled features on a split's images (a Lightning predict pass at the evaluation
precision) and on the foreign images, and the fitting of its Uncertainty from them: what `fit` (at the end of
training) and `kvasir test` (for a checkpoint without one) run."""

from __future__ import annotations

import functools
import logging
import tempfile
from pathlib import Path

import numpy as np
import torch

from kvasir_mobileone.answers import INPUT_STATISTICS, Uncertainty, UncertaintyConfig
from kvasir_mobileone.data.datamodule import ImageFolderDataModule
from kvasir_mobileone.data.foreign import write_foreign
from kvasir_mobileone.errors import UserError
from kvasir_mobileone.evaluation.uncertainty import Outputs, fit_uncertainty
from kvasir_mobileone.io import IMAGE_EXTENSIONS
from kvasir_mobileone.models.backbone import head_weights
from kvasir_mobileone.models.classifier import TestOutputs

log = logging.getLogger(__name__)


def run_test(trainer, module, datamodule, **test_kwargs) -> TestOutputs:
    """trainer.test over the datamodule's `evaluate` split, and what it gathered: every image once."""
    trainer.test(module, datamodule=datamodule, verbose=False, **test_kwargs)
    return module.take_test_outputs()


def as_outputs(tested: TestOutputs, groups: np.ndarray | None = None) -> Outputs:
    return Outputs(tested.logits, tested.features, tested.targets, tested.statistics, groups)


def groups_of(rows: list[dict]) -> np.ndarray:
    """Each row's near-duplicate group as the manifest records it; a row without one is a group of its own."""
    return np.array([r.get("group") or f"image {i}" for i, r in enumerate(rows)])


def split_outputs(trainer, module, data, rows, split: str, limit: int | None = None, skip=()) -> Outputs:
    """Outputs on a split's images (a seeded sample of `limit` of them; `skip`: paths training could not read),
    served unaugmented through the predict loader, with the model's class indices (a sample may lack a class)."""
    chosen = [r for r in rows if r["split"] == split and r["path"] not in set(skip)]
    if limit and len(chosen) > limit:
        keep = np.sort(np.random.default_rng(0).permutation(len(chosen))[:limit])
        chosen = [chosen[i] for i in keep]
    if not chosen:
        width = module.backbone.num_features
        return Outputs(
            np.zeros((0, len(module.class_names)), np.float32),
            np.zeros((0, width), np.float32),
            np.zeros(0, int),
            np.zeros((0, len(INPUT_STATISTICS))),
            np.zeros(0, str),
        )
    datamodule = ImageFolderDataModule(data, chosen, module.model_input, evaluate=split, class_names=module.class_names)
    batches = trainer.predict(module, datamodule=datamodule)
    index, targets, logits, features, stats = (torch.cat(parts).numpy() for parts in zip(*batches, strict=True))
    order = np.argsort(index)
    return Outputs(logits[order], features[order], targets[order], stats[order], groups_of(chosen)[index[order]])


@functools.lru_cache(maxsize=4)
def foreign_inputs(model_input, selection: bool = False) -> np.ndarray:
    """data/foreign.py's images as network inputs, read as `predict` reads a file (written as PNG, then
    ModelInput.read): the report's set, or (selection) the set of other sources that --uncertainty.detector auto
    reads. Made once per model input (fit's calibration and its report share them)."""
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_foreign(tmp, selection=selection)
        return np.stack([model_input.read(p)[0] for p in paths])


def foreign_outputs(module, selection: bool = False) -> Outputs:
    """The module's outputs on foreign_inputs."""
    return batch_outputs(module, foreign_inputs(module.model_input, selection))


def folder_outputs(module, folder: str) -> Outputs:
    """The module's outputs on every image under `folder` (--uncertainty.near_dir), read as `predict` reads them;
    an image that cannot be read is left out and said."""
    paths = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    inputs, unread = [], []
    for path in paths:
        try:
            inputs.append(module.model_input.read(path)[0])
        except Exception as err:  # reported, never fatal
            unread.append(f"{path}: {err}")
    if unread:
        log.warning(f"--uncertainty.near_dir: {len(unread)} images could not be read and are left out: {unread[:3]}")
    if not inputs:
        raise UserError(f"--uncertainty.near_dir {folder}: no image could be read in it.")
    parts = [batch_outputs(module, np.stack(inputs[i : i + 64])) for i in range(0, len(inputs), 64)]
    return Outputs(
        np.concatenate([o.logits for o in parts]),
        np.concatenate([o.features for o in parts]),
        statistics=np.concatenate([o.statistics for o in parts]),
    )


def batch_outputs(module, batch: np.ndarray) -> Outputs:
    """The module's outputs (and the input statistics) on a batch of network inputs."""
    module.eval()
    device = module.device
    with torch.no_grad(), module.evaluation_context(device):
        logits, features = module.logits_and_features(torch.from_numpy(batch).to(device))
    return Outputs(
        logits.float().cpu().numpy(), features.float().cpu().numpy(), statistics=module.model_input.statistics(batch)
    )


def calibrate(trainer, module, data, rows, config: UncertaintyConfig, tested: TestOutputs, skip=()) -> Uncertainty:
    """The module's Uncertainty: the detector fitted on (a sample of) the training images, thresholds on val, every
    detector compared on the test outputs (`tested`) against the foreign images."""
    log.info(
        f"Uncertainty: detector ({config.detector}) on up to {config.fit_images} training images, thresholds on val."
    )
    train = split_outputs(trainer, module, data, rows, "train", config.fit_images, skip)
    val = split_outputs(trainer, module, data, rows, "val")
    selection = foreign_outputs(module, selection=True)
    test = as_outputs(tested, groups_of([r for r in rows if r["split"] == "test"])[tested.index])
    near = folder_outputs(module, config.near_dir) if config.near_dir else None
    return fit_uncertainty(
        train, val, config, selection, (test, foreign_outputs(module), near), head_weights(module.backbone)
    )
