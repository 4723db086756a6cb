"""The LightningModule: a timm classifier with one step shared by train, val and test, an injected optimizer and
LR scheduler, and a checkpoint that stands alone (model, classes, input size, mean/std, evaluation precision)."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import instantiate_class
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassStatScores

from kvasir_mobileone.errors import UserError
from kvasir_mobileone.images import ModelInput
from kvasir_mobileone.models.backbone import create_backbone, model_input_for
from kvasir_mobileone.runs import read_checkpoint

# progress notes below the commands layer; `kvasir` shows them on stdout (cli.show_notes)
log = logging.getLogger(__name__)

# Epochs of warmup when the learning rate is scaled up for a larger batch and --model.warmup_epochs is not given
# (the linear scaling rule needs a warmup: Goyal et al. 2017, "Accurate, Large Minibatch SGD").
SCALED_WARMUP_EPOCHS = 3


@dataclass(frozen=True)
class ModelConfig:
    """The backbone and how it is optimised.

    Args:
        name: any timm model name; mobileone_s0 ... mobileone_s4
        pretrained: ImageNet weights from the Hugging Face hub through timm
        weights: local timm checkpoint or .safetensors file, for offline machines
        optimizer: a torch.optim class (Adam, torch.optim.SGD, any dotted path) or {class_path, init_args}
        lr: learning rate at lr_reference_batch images per step (init_args may override it)
        weight_decay: weight decay of the optimizer (init_args may override it)
        lr_scheduler: None, a torch.optim.lr_scheduler class or {class_path, init_args, interval: epoch|step}
        warmup_epochs: epochs of linear learning-rate warmup, before the lr_scheduler; None: 3 when lr_scaling
            raises the learning rate, else 0
        lr_scaling: how the learning rate follows the batch (images per optimizer step over all devices):
            linear (lr x batch / lr_reference_batch), sqrt, or none
        lr_reference_batch: the batch size `lr` is meant for (the original workflow's 32)
        label_smoothing: cross-entropy label smoothing (0 to 1)
        class_weights: none, or balanced: the training loss weights each class by N / (K x its training images),
            so that every class weighs as much in total (scikit-learn's "balanced"); val and test losses unweighted
    """

    name: str = "mobileone_s3"
    pretrained: bool = True
    weights: str | None = None
    optimizer: str | dict[str, Any] = "Adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    lr_scheduler: str | dict[str, Any] | None = None
    warmup_epochs: int | None = None
    label_smoothing: float = 0.0
    lr_scaling: Literal["linear", "sqrt", "none"] = "linear"
    lr_reference_batch: int = 32
    class_weights: Literal["none", "balanced"] = "none"


def inductor_cache_dir() -> Path:
    """Where torch.compile keeps compiled kernels and graphs across runs, so that compiling is paid once per machine
    and model: $TORCHINDUCTOR_CACHE_DIR when set, else $XDG_CACHE_HOME/kvasir-mobileone/inductor (~/.cache/...)."""
    if os.environ.get("TORCHINDUCTOR_CACHE_DIR"):
        return Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kvasir-mobileone" / "inductor"


def balanced_class_weights(counts: list[int]) -> list[float]:
    """N / (K x n_c) per class (0 for a class without training images)."""
    total, present = sum(counts), sum(1 for n in counts if n)
    return [total / (present * n) if n else 0.0 for n in counts]


def class_spec(spec: str | dict[str, Any], package: str) -> dict[str, Any]:
    """{class_path, init_args} as LightningCLI injects classes; a bare class name is looked up in `package`."""
    if isinstance(spec, str):
        spec = {"class_path": spec}
    if "class_path" not in spec:
        raise UserError(f"{spec} names no class: give a class name or {{class_path: ..., init_args: {{...}}}}.")
    path = spec["class_path"] if "." in spec["class_path"] else f"{package}.{spec['class_path']}"
    return {"class_path": path, "init_args": dict(spec.get("init_args") or {})} | (
        {"interval": spec["interval"]} if "interval" in spec else {}
    )


def lr_factor(cfg: ModelConfig, batch_size: int | None) -> float:
    """What cfg.lr_scaling multiplies the learning rate by at `batch_size` images per optimizer step."""
    if not batch_size:
        return 1.0
    ratio = batch_size / cfg.lr_reference_batch
    return {"linear": ratio, "sqrt": ratio**0.5, "none": 1.0}[cfg.lr_scaling]


def scaled_lr(cfg: ModelConfig, batch_size: int) -> float:
    """The learning rate for `batch_size` images per optimizer step under cfg.lr_scaling."""
    return cfg.lr * lr_factor(cfg, batch_size)


def warmup_epochs(cfg: ModelConfig, batch_size: int) -> int:
    if cfg.warmup_epochs is not None:
        return cfg.warmup_epochs
    return SCALED_WARMUP_EPOCHS if lr_factor(cfg, batch_size) > 1 else 0


def build_optimizer(cfg: ModelConfig, parameters, batch_size: int | None = None) -> torch.optim.Optimizer:
    """The configured optimizer, its learning rate (--model.lr, or an init_args lr) scaled to `batch_size` images
    per step."""
    spec = class_spec(cfg.optimizer, "torch.optim")
    init_args = {"lr": cfg.lr, "weight_decay": cfg.weight_decay} | spec["init_args"]
    spec["init_args"] = init_args | {"lr": init_args["lr"] * lr_factor(cfg, batch_size)}
    try:
        return instantiate_class(parameters, spec)
    except (ImportError, AttributeError, TypeError) as err:
        raise UserError(
            f"--model.optimizer {cfg.optimizer!r} could not be made ({err}): name a torch.optim class, "
            "e.g. Adam or torch.optim.SGD, with init_args it accepts."
        ) from err


def scheduler_interval(cfg: ModelConfig) -> str:
    return (
        class_spec(cfg.lr_scheduler, "torch.optim.lr_scheduler").get("interval", "epoch")
        if cfg.lr_scheduler
        else "epoch"
    )


def build_lr_scheduler(
    cfg: ModelConfig, optimizer: torch.optim.Optimizer, max_epochs: int, batch_size: int = 0, steps_per_epoch: int = 1
) -> dict | None:
    """The configured scheduler, after warmup_epochs of linear warmup; stepped per epoch by default (per
    optimizer step with interval: step, when the warmup counts steps_per_epoch steps per epoch)."""
    from torch.optim.lr_scheduler import LinearLR, SequentialLR

    scheduler, interval = None, "epoch"
    if cfg.lr_scheduler:
        spec = class_spec(cfg.lr_scheduler, "torch.optim.lr_scheduler")
        interval = spec.pop("interval", "epoch")
        try:
            scheduler = instantiate_class(optimizer, spec)
        except (ImportError, AttributeError, TypeError) as err:
            raise UserError(
                f"--model.lr_scheduler {cfg.lr_scheduler!r} could not be made ({err}): name a "
                "torch.optim.lr_scheduler class with init_args it accepts."
            ) from err
    warmup = min(warmup_epochs(cfg, batch_size or cfg.lr_reference_batch), max_epochs)
    if warmup:
        warmup *= steps_per_epoch if interval == "step" else 1
        ramp = LinearLR(optimizer, start_factor=0.01, total_iters=warmup)
        scheduler = SequentialLR(optimizer, [ramp, scheduler], milestones=[warmup]) if scheduler else ramp
    return {"scheduler": scheduler, "interval": interval} if scheduler else None


class PresentClassesF1(MulticlassStatScores):
    """Macro-F1 as the test report defines it (evaluation.metrics.macro_f1): the mean F1 over the classes that have
    images among the targets. torchmetrics' macro average also counts a class that is predicted but absent as 0,
    which on small imbalanced val sets picks checkpoints by another number than the one published."""

    def __init__(self, num_classes: int, **kwargs):
        super().__init__(num_classes, average=None, **kwargs)

    def compute(self) -> torch.Tensor:
        tp, fp, _, fn = self._final_state()
        f1 = 2 * tp / (2 * tp + fp + fn).clamp_min(1)
        present = (tp + fn) > 0
        return f1[present].float().mean() if present.any() else torch.tensor(0.0, device=tp.device)


class PresentClassesRecall(MulticlassStatScores):
    """Balanced accuracy as the test report defines it: the mean recall over the classes that have images."""

    def __init__(self, num_classes: int, **kwargs):
        super().__init__(num_classes, average=None, **kwargs)

    def compute(self) -> torch.Tensor:
        tp, _, _, fn = self._final_state()
        present = (tp + fn) > 0
        return (tp[present] / (tp + fn)[present]).float().mean() if present.any() else torch.tensor(0.0)


def stage_metrics(num_classes: int, stage: str) -> MetricCollection:
    """Running metrics logged per epoch (the test report computes its own from the gathered predictions, with the
    same definitions)."""
    metrics: dict[str, Any] = {"acc": MulticlassAccuracy(num_classes, average="micro")}
    if stage in ("val", "test"):
        metrics["f1_macro"] = PresentClassesF1(num_classes)
        metrics["balanced_acc"] = PresentClassesRecall(num_classes)
    return MetricCollection(metrics, prefix=f"{stage}/")


class MobileOneClassifier(L.LightningModule):
    """A timm classifier trained with cross-entropy; its checkpoint carries everything needed to use it alone."""

    def __init__(
        self,
        class_names: list[str],
        model: ModelConfig | dict | None = None,
        max_epochs: int = 1,
        model_input: ModelInput | None = None,
        eval_precision: str = "32-true",
        run_config: dict | None = None,
        class_counts: list[int] | None = None,
    ):
        """`model_input`: the network's input (backbone.model_input_for; default: the backbone's own size, no mask)."""
        super().__init__()
        model = ModelConfig(**model) if isinstance(model, dict) else (model or ModelConfig())
        self.cfg = model
        self.class_names = list(class_names)
        self.backbone = create_backbone(model.name, len(class_names), model.pretrained, model.weights)
        self.model_input: ModelInput = model_input or model_input_for(model.name)
        self.eval_precision = eval_precision
        weights = balanced_class_weights(class_counts) if model.class_weights == "balanced" and class_counts else None
        # the training loss's class weights (None: unweighted), in the checkpoint with the counts they come from
        self.register_buffer("loss_weights", torch.tensor(weights) if weights else None, persistent=False)
        self.save_hyperparameters(
            {
                "class_names": self.class_names,
                "model": asdict(model),
                "max_epochs": max_epochs,
                # the model's input (images.ModelInput); the key is today's release's, which reads it too
                "normalization": self.model_input.to_dict(),
                "eval_precision": eval_precision,
                "run_config": run_config or {},
                "class_counts": class_counts,
                "class_weights": weights,
            }
        )
        # keyed "<stage>_" because nn.Module.train is taken
        self.metrics = torch.nn.ModuleDict(
            {f"{s}_": stage_metrics(len(class_names), s) for s in ("train", "val", "test")}
        )
        self.channels_last = False  # set by accelerate(); not part of the checkpoint
        self.compiled, self.static_batch = False, None  # likewise
        self._test_batches: list[tuple[torch.Tensor, ...]] = []
        self.tta = False  # test-time augmentation: also average in the horizontally flipped image
        self.test_predictions: dict[str, np.ndarray] | None = None  # index, probs, targets: every test image once

    @classmethod
    def from_checkpoint(cls, path: str | Path, map_location: str = "cpu") -> MobileOneClassifier:
        """Load a checkpoint without touching the network: the weights come from the checkpoint itself."""
        ckpt = read_checkpoint(path, map_location)
        hparams = ckpt.get("hyper_parameters")
        if not hparams or "class_names" not in hparams:
            raise UserError(f"{path} is not a checkpoint written by `kvasir fit` (no class names in it).")
        offline = hparams["model"] | {"pretrained": False, "weights": None}
        if "normalization" not in hparams:
            raise UserError(
                f"{path} holds no description of the model's input: it was written before kvasir-mobileone 0.1.0. "
                "Train it again with `kvasir fit`."
            )
        model_input = ModelInput.from_dict(hparams["normalization"])
        if hparams.get("mask_regions") and not model_input.mask_regions:  # today's release kept the names apart
            model_input = dataclasses.replace(model_input, mask_regions=tuple(hparams["mask_regions"]))
        module = cls(
            hparams["class_names"],
            offline,
            hparams.get("max_epochs", 1),
            model_input,
            hparams.get("eval_precision", "32-true"),
            hparams.get("run_config"),
            hparams.get("class_counts"),
        )
        module.load_state_dict(ckpt["state_dict"])
        return module.eval()

    def accelerate(
        self, compile_mode: str = "off", channels_last: str = "off", static_batch: int | None = None
    ) -> None:
        """Training speed settings (--trainer.compile, --trainer.channels_last): the backbone compiled in place
        (its state_dict keys, and so the checkpoint, stay as they are) and NHWC memory for it and its input.

        The compiled graph has static shapes: training batches of `static_batch` images (any training batch when it
        is None). Everything else runs eager:
        the last, smaller batch of an epoch (no recompile, no padding: every image counted once and BatchNorm sees
        the real batch) and all of validation and test (no recompile for their batch sizes, and no compiled graph
        under no_grad that could fold BatchNorm with stale weights, PyTorch issue 108863). `kvasir fit` keeps the
        compiled kernels in inductor_cache_dir() across runs."""
        self.channels_last = channels_last == "on"
        if self.channels_last:
            self.backbone.to(memory_format=torch.channels_last)
        self.static_batch = static_batch
        self.compiled = compile_mode != "off"
        if self.compiled:
            self.backbone.compile(mode=compile_mode, dynamic=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        if self.compiled and not (self.training and self.static_batch in (None, images.shape[0])):
            return self.backbone._call_impl(images)  # eager, the module's own forward: see accelerate()
        return self.backbone(images)

    def evaluation_context(self, device: torch.device):
        """fp32 for evaluation (the documented default), whatever autocast the trainer's precision set up."""
        if self.eval_precision == "32-true":
            return torch.autocast(device_type=device.type, enabled=False)
        return contextlib.nullcontext()

    def _shared_step(self, batch, stage: str) -> torch.Tensor | None:
        images, targets, indices = batch
        if not len(targets):  # every image of the batch was unreadable (reported by the data module)
            return None
        if stage == "test":
            with self.evaluation_context(images.device):
                logits = self(images.float()).float()
        else:
            logits = self(images)
        training = stage == "train"
        loss = F.cross_entropy(
            logits,
            targets,
            weight=self.loss_weights if training else None,
            label_smoothing=self.cfg.label_smoothing if training else 0.0,
        )
        self.metrics[f"{stage}_"].update(logits.detach(), targets)
        on_step = stage == "train"
        batch_size = len(targets)
        self.log(
            f"{stage}/loss",
            loss,
            prog_bar=True,
            on_step=on_step,
            on_epoch=True,
            sync_dist=not on_step,
            batch_size=batch_size,
        )
        if stage == "test":
            probs = logits.detach().float().softmax(dim=1)
            if self.tta:
                with self.evaluation_context(images.device):
                    flipped = self(torch.flip(images.float(), dims=[3])).detach().float().softmax(dim=1)
            else:
                flipped = probs
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

    def step_batch_size(self) -> int | None:
        """Images per optimizer step over every device: what the learning rate is scaled to."""
        trainer = self._trainer
        datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
        if datamodule is None or not hasattr(datamodule, "batch_size"):
            return None
        return datamodule.batch_size * trainer.world_size * trainer.accumulate_grad_batches

    def configure_optimizers(self):
        batch = self.step_batch_size()
        optimizer = build_optimizer(self.cfg, self.parameters(), batch)
        steps_per_epoch = 1
        if scheduler_interval(self.cfg) == "step" and self._trainer is not None and self.hparams.max_epochs > 0:
            steps_per_epoch = max(1, int(self._trainer.estimated_stepping_batches // self.hparams.max_epochs))
        scheduler = build_lr_scheduler(self.cfg, optimizer, self.hparams.max_epochs, batch or 0, steps_per_epoch)
        if lr_factor(self.cfg, batch) != 1:
            log.info(
                f"Learning rate {optimizer.defaults['lr']:.3g}: {self.cfg.lr_scaling}-scaled from "
                f"{self.cfg.lr_reference_batch} images per step (--model.lr_reference_batch) to {batch}, "
                f"{warmup_epochs(self.cfg, batch)} warmup epochs (--model.lr_scaling none keeps it)."
            )
        return {"optimizer": optimizer, "lr_scheduler": scheduler} if scheduler else optimizer
