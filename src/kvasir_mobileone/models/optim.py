"""The optimizer and learning-rate schedule of a run, injected the LightningCLI way ({class_path, init_args}), and
the learning rate scaled to the batch size (linear or square-root rule, with a warmup)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from lightning.pytorch.cli import instantiate_class

from kvasir_mobileone.errors import UserError

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
        outlier_exposure: the weight of outlier exposure (Hendrycks et al. 2019; 0: off, they used 0.5): each
            training batch also passes half as many generated images that are not endoscopy
            (data/foreign.outlier_images), whose cross-entropy to the uniform distribution joins the loss
        ema: the decay of an exponential moving average of the weights (0: off; the MobileOne paper's recipe keeps
            one; 0.999 for a few thousand steps), warmed up (models/trainer.ema_with_warmup), Lightning's
            WeightAveraging. Validation, the best checkpoint's choice, test, export and predict use the averaged
            weights; --resume continues the average
        drop_path: stochastic depth rate, for a timm backbone that has it (0: off)
        mixup: Mixup's alpha (Zhang et al. 2018; 0: off), timm's Mixup on each training batch, soft targets
        cutmix: CutMix's alpha (Yun et al. 2019; 0: off); with mixup too, each batch is one or the other (timm)
        teacher: distillation from a bigger teacher: a run folder (or checkpoint) of `kvasir fit`, any timm model,
            or a timm model name with teacher_weights; it answers the very batch the student trains on, in its own
            model input (models/distill.py)
        teacher_weights: a timm checkpoint or .safetensors for a teacher named by its timm name, with a head for
            the same classes
        distill_weight: the share of the distillation term in the loss on labeled images (the labels' cross-entropy
            has the rest); unlabeled frames (--data.unlabeled_dir) learn the teacher's answers alone
        distill_temperature: the temperature both answers are softened by (the term is scaled by its square)
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
    outlier_exposure: float = 0.0
    ema: float = 0.0
    drop_path: float = 0.0
    mixup: float = 0.0
    cutmix: float = 0.0
    teacher: str | None = None
    teacher_weights: str | None = None
    distill_weight: float = 0.5
    distill_temperature: float = 1.0

    def __post_init__(self):
        if not 0.0 <= self.ema < 1.0:
            raise UserError(f"--model.ema {self.ema}: the average's decay is in [0, 1) (0: off; e.g. 0.999).")
        if not 0.0 <= self.distill_weight <= 1.0 or self.distill_temperature <= 0:
            raise UserError(
                f"--model.distill_weight {self.distill_weight} must be in [0, 1] and --model.distill_temperature "
                f"{self.distill_temperature} above 0."
            )
        if min(self.mixup, self.cutmix, self.drop_path) < 0:
            raise UserError("--model.mixup, --model.cutmix and --model.drop_path are 0 (off) or above.")


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


def lr_factor(model: ModelConfig, batch_size: int | None) -> float:
    """What model.lr_scaling multiplies the learning rate by at `batch_size` images per optimizer step."""
    if not batch_size:
        return 1.0
    ratio = batch_size / model.lr_reference_batch
    return {"linear": ratio, "sqrt": ratio**0.5, "none": 1.0}[model.lr_scaling]


def scaled_lr(model: ModelConfig, batch_size: int) -> float:
    """The learning rate for `batch_size` images per optimizer step under model.lr_scaling."""
    return model.lr * lr_factor(model, batch_size)


def warmup_epochs(model: ModelConfig, batch_size: int) -> int:
    if model.warmup_epochs is not None:
        return model.warmup_epochs
    return SCALED_WARMUP_EPOCHS if lr_factor(model, batch_size) > 1 else 0


def build_optimizer(model: ModelConfig, parameters, batch_size: int | None = None) -> torch.optim.Optimizer:
    """The configured optimizer, its learning rate (--model.lr, or an init_args lr) scaled to `batch_size` images
    per step."""
    spec = class_spec(model.optimizer, "torch.optim")
    init_args = {"lr": model.lr, "weight_decay": model.weight_decay} | spec["init_args"]
    spec["init_args"] = init_args | {"lr": init_args["lr"] * lr_factor(model, batch_size)}
    try:
        return instantiate_class(parameters, spec)
    except (ImportError, AttributeError, TypeError) as err:
        raise UserError(
            f"--model.optimizer {model.optimizer!r} could not be made ({err}): name a torch.optim class, "
            "e.g. Adam or torch.optim.SGD, with init_args it accepts."
        ) from err


def scheduler_interval(model: ModelConfig) -> str:
    return (
        class_spec(model.lr_scheduler, "torch.optim.lr_scheduler").get("interval", "epoch")
        if model.lr_scheduler
        else "epoch"
    )


def build_lr_scheduler(
    model: ModelConfig, optimizer: torch.optim.Optimizer, max_epochs: int, batch_size: int = 0, steps_per_epoch: int = 1
) -> dict | None:
    """The configured scheduler, after warmup_epochs of linear warmup; stepped per epoch by default (per
    optimizer step with interval: step, when the warmup counts steps_per_epoch steps per epoch)."""
    from torch.optim.lr_scheduler import LinearLR, SequentialLR

    scheduler, interval = None, "epoch"
    if model.lr_scheduler:
        spec = class_spec(model.lr_scheduler, "torch.optim.lr_scheduler")
        interval = spec.pop("interval", "epoch")
        try:
            scheduler = instantiate_class(optimizer, spec)
        except (ImportError, AttributeError, TypeError) as err:
            raise UserError(
                f"--model.lr_scheduler {model.lr_scheduler!r} could not be made ({err}): name a "
                "torch.optim.lr_scheduler class with init_args it accepts."
            ) from err
    warmup = min(warmup_epochs(model, batch_size or model.lr_reference_batch), max_epochs)
    if warmup:
        warmup *= steps_per_epoch if interval == "step" else 1
        ramp = LinearLR(optimizer, start_factor=0.01, total_iters=warmup)
        scheduler = SequentialLR(optimizer, [ramp, scheduler], milestones=[warmup]) if scheduler else ramp
    return {"scheduler": scheduler, "interval": interval} if scheduler else None
