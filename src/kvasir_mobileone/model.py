"""timm backbone factory and the LightningModule with one step shared by train, val and test."""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import timm
import torch
import torch.nn.functional as F
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from kvasir_mobileone.data import Normalization


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights could not be downloaded or read."""


class UnsafeCheckpointError(RuntimeError):
    """A checkpoint holds more than tensors and plain data; loading it could run code, so it is refused."""


def load_checkpoint_safely(path: str | Path, map_location: str = "cpu") -> dict:
    """torch.load with weights_only=True: tensors and plain containers only, never code from the file."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise UnsafeCheckpointError(
            f"Refused to load {path}: it holds Python objects other than tensors and plain data, and unpickling "
            f"them could run code ({str(err).splitlines()[0]}). Only load checkpoints from people you trust; "
            "nothing from the file was executed."
        ) from err


@dataclass
class ModelConfig:
    """The backbone and how it is optimised.

    Args:
        name: any timm model name; mobileone_s0 ... mobileone_s4
        pretrained: ImageNet weights from the Hugging Face hub through timm
        weights: local timm checkpoint or .safetensors file, for offline machines
        optimizer: any class in torch.optim
        lr: learning rate
        weight_decay: weight decay of the optimizer
        optimizer_kwargs: more keyword arguments of the optimizer, e.g. {momentum: 0.9}
        label_smoothing: cross-entropy label smoothing (0 to 1)
        warmup_epochs: epochs of linear learning-rate warmup
        cosine: cosine decay to 0 over the run, after the warmup
    """

    name: str = "mobileone_s3"
    pretrained: bool = True
    weights: str | None = None
    optimizer: str = "Adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer_kwargs: dict[str, Any] = field(default_factory=dict)
    label_smoothing: float = 0.0
    warmup_epochs: int = 0
    cosine: bool = False


def create_backbone(name: str, num_classes: int, pretrained: bool = True, weights: str | None = None):
    """A timm model with a fresh `num_classes` head: from local `weights`, from the hub, or from scratch."""
    if weights:
        if not Path(weights).is_file():
            raise WeightsUnavailableError(f"Weights file {weights} not found.")
        # timm loads the file as the pretrained source and drops a classifier head of another size.
        return timm.create_model(
            name, pretrained=True, num_classes=num_classes, pretrained_cfg_overlay={"file": str(weights)}
        )
    if not pretrained:
        return timm.create_model(name, pretrained=False, num_classes=num_classes)
    try:
        return timm.create_model(name, pretrained=True, num_classes=num_classes)
    except Exception as err:  # hub, network and cache errors come in many types
        raise WeightsUnavailableError(
            f"Could not load ImageNet-pretrained weights for {name} ({type(err).__name__}: {err}). "
            "On a machine without internet either pass a local file with --model.weights FILE "
            f"(e.g. the model.safetensors of timm/{name}.apple_in1k from huggingface.co, copied over), "
            "or train from scratch with --model.pretrained false."
        ) from err


def normalization_of(backbone: torch.nn.Module, image_size: int | None = None) -> Normalization:
    """Input size, mean/std and interpolation from timm's data config for this backbone."""
    cfg = timm.data.resolve_model_data_config(backbone)
    return Normalization(
        image_size=image_size or cfg["input_size"][-1],
        mean=tuple(cfg["mean"]),
        std=tuple(cfg["std"]),
        interpolation=cfg.get("interpolation", "bilinear"),
    )


def stage_metrics(num_classes: int, stage: str) -> MetricCollection:
    """Metrics logged per stage. Test adds top-k (k <= number of classes), micro F1 and per-class values."""
    metrics: dict[str, Any] = {"acc": MulticlassAccuracy(num_classes, average="micro")}
    if stage in ("val", "test"):
        metrics["f1_macro"] = MulticlassF1Score(num_classes, average="macro")
    if stage == "test":
        for k in (3, 5):
            if k < num_classes:
                metrics[f"top{k}"] = MulticlassAccuracy(num_classes, top_k=k, average="micro")
        metrics["f1_micro"] = MulticlassF1Score(num_classes, average="micro")
    return MetricCollection(metrics, prefix=f"{stage}/")


class MobileOneClassifier(L.LightningModule):
    """A timm classifier trained with cross-entropy; `class_names` travel with every checkpoint."""

    def __init__(self, class_names: list[str], model: ModelConfig | dict | None = None, max_epochs: int = 1):
        super().__init__()
        model = ModelConfig(**model) if isinstance(model, dict) else (model or ModelConfig())
        self.save_hyperparameters({"class_names": list(class_names), "model": vars(model), "max_epochs": max_epochs})
        self.cfg = model
        self.class_names = list(class_names)
        self.backbone = create_backbone(model.name, len(class_names), model.pretrained, model.weights)
        # keyed "<stage>_" because nn.Module.train is taken
        self.metrics = torch.nn.ModuleDict(
            {f"{s}_": stage_metrics(len(class_names), s) for s in ("train", "val", "test")}
        )
        self._test_batches: list[tuple[torch.Tensor, ...]] = []
        self.tta = False  # test-time augmentation: also average in the horizontally flipped image
        self.test_predictions: dict[str, np.ndarray] | None = None  # index, probs, targets: every test image once

    @classmethod
    def from_checkpoint(cls, path: str | Path, map_location: str = "cpu") -> MobileOneClassifier:
        """Load a run's checkpoint without touching the network: the weights come from the checkpoint."""
        ckpt = load_checkpoint_safely(path, map_location)
        hparams = ckpt["hyper_parameters"]
        offline = hparams["model"] | {"pretrained": False, "weights": None}
        module = cls(hparams["class_names"], offline, hparams.get("max_epochs", 1))
        module.load_state_dict(ckpt["state_dict"])
        return module.eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images)

    def _shared_step(self, batch, stage: str) -> torch.Tensor:
        images, targets, indices = batch
        logits = self(images)
        loss = F.cross_entropy(logits, targets, label_smoothing=self.cfg.label_smoothing if stage == "train" else 0.0)
        self.metrics[f"{stage}_"].update(logits.detach(), targets)
        on_step = stage == "train"
        self.log(f"{stage}/loss", loss, prog_bar=True, on_step=on_step, on_epoch=True, sync_dist=not on_step)
        if stage == "test":
            probs = logits.detach().float().softmax(dim=1)
            flipped = self(torch.flip(images, dims=[3])).detach().float().softmax(dim=1) if self.tta else probs
            self._test_batches.append((indices, targets, probs, (probs + flipped) / 2))
        return loss

    def _log_epoch_metrics(self, stage: str) -> None:
        values = self.metrics[f"{stage}_"].compute()
        self.log_dict(values, prog_bar=stage != "test", sync_dist=True)
        self.metrics[f"{stage}_"].reset()

    def training_step(self, batch, batch_idx):
        return self._shared_step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._shared_step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._shared_step(batch, "test")

    def on_train_epoch_end(self):
        self._log_epoch_metrics("train")

    def on_validation_epoch_end(self):
        self._log_epoch_metrics("val")

    def on_test_epoch_start(self):
        self._test_batches.clear()

    def on_test_epoch_end(self):
        self._log_epoch_metrics("test")
        # Gather every rank's predictions; DistributedSampler pads ranks with repeats, so keep each index once.
        gathered = [self.all_gather(torch.cat(parts)) for parts in zip(*self._test_batches, strict=True)]
        indices, targets = (t.reshape(-1) for t in gathered[:2])
        probs, probs_tta = (t.reshape(-1, len(self.class_names)).float() for t in gathered[2:])
        order = np.unique(indices.cpu().numpy(), return_index=True)[1]
        self.test_predictions = {
            "index": indices.cpu().numpy()[order],
            "targets": targets.cpu().numpy()[order],
            "probs": probs.cpu().numpy()[order],
        }
        if self.tta:
            self.test_predictions["probs_tta"] = probs_tta.cpu().numpy()[order]
        self._test_batches.clear()

    def configure_optimizers(self):
        optimizer_cls = getattr(torch.optim, self.cfg.optimizer, None)
        if optimizer_cls is None:
            raise ValueError(f"--model.optimizer {self.cfg.optimizer!r} is not a class in torch.optim (e.g. Adam).")
        optimizer = optimizer_cls(
            self.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay, **self.cfg.optimizer_kwargs
        )
        schedules = []
        warmup = min(self.cfg.warmup_epochs, self.hparams.max_epochs)
        if warmup:
            schedules.append(torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.01, total_iters=warmup))
        if self.cfg.cosine:
            rest = max(1, self.hparams.max_epochs - warmup)
            schedules.append(torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=rest))
        if not schedules:
            return optimizer
        scheduler = (
            schedules[0]
            if len(schedules) == 1
            else torch.optim.lr_scheduler.SequentialLR(optimizer, schedules, milestones=[warmup])
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
