"""The LightningModule: a timm classifier with one step shared by train, val and test, the optimizer and schedule of
models/optim.py, the metrics of models/metrics.py, and a checkpoint that stands alone (model, classes, the model
input, evaluation precision)."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from kvasir_mobileone.answers import Uncertainty
from kvasir_mobileone.errors import UserError
from kvasir_mobileone.images import ModelInput
from kvasir_mobileone.io import atomic_path
from kvasir_mobileone.models.backbone import create_backbone, logits_and_features, model_input_for
from kvasir_mobileone.models.metrics import stage_metrics
from kvasir_mobileone.models.optim import (
    ModelConfig,
    build_lr_scheduler,
    build_optimizer,
    lr_factor,
    scheduler_interval,
    warmup_epochs,
)
from kvasir_mobileone.runs import read_checkpoint

UNCERTAINTY_KEY = "uncertainty"  # the checkpoint's: {plain: Uncertainty.plain(), arrays: {name: tensor}}

# progress notes below the commands layer; `kvasir` shows them on stdout (cli.show_notes)
log = logging.getLogger(__name__)


def inductor_cache_dir() -> Path:
    """Where torch.compile keeps compiled kernels and graphs across runs, so that compiling is paid once per machine
    and model: $TORCHINDUCTOR_CACHE_DIR when set, else $XDG_CACHE_HOME/kvasir-mobileone/inductor (~/.cache/...)."""
    if os.environ.get("TORCHINDUCTOR_CACHE_DIR"):
        return Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kvasir-mobileone" / "inductor"


def store_uncertainty(ckpt_path: str | Path, uncertainty: Uncertainty) -> Path:
    """Write `uncertainty` into a checkpoint (whole or not at all): every command that opens it then has it."""
    ckpt = read_checkpoint(ckpt_path)
    arrays = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in uncertainty.arrays.items()}
    ckpt[UNCERTAINTY_KEY] = {"plain": uncertainty.plain(), "arrays": arrays}
    with atomic_path(ckpt_path) as tmp:
        torch.save(ckpt, tmp)
    return Path(ckpt_path)


@dataclass(frozen=True)
class TestOutputs:
    """A test epoch's outputs, every image once (DistributedSampler's repeats dropped), in index order: the index
    into the split's rows, targets, probabilities (and with TTA those averaged with the flipped image's), logits and
    pooled features at the evaluation precision."""

    index: np.ndarray
    targets: np.ndarray
    probs: np.ndarray
    logits: np.ndarray
    features: np.ndarray
    probs_tta: np.ndarray | None = None
    statistics: np.ndarray | None = None  # the images' input statistics (answers.input_statistics)


def balanced_class_weights(counts: list[int]) -> list[float]:
    """N / (K x n_c) per class (0 for a class without training images)."""
    total, present = sum(counts), sum(1 for n in counts if n)
    return [total / (present * n) if n else 0.0 for n in counts]


class Classifier(L.LightningModule):
    """Any timm classifier (MobileOne by default) trained with cross-entropy; its checkpoint carries everything
    needed to use it alone."""

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
        self.model_config = model
        self.class_names = list(class_names)
        self.backbone = create_backbone(
            model.name, len(class_names), model.pretrained, model.weights, drop_path=model.drop_path
        )
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
        self._tested: TestOutputs | None = None  # what the last test epoch gathered, until take_test_outputs()
        self.uncertainty: Uncertainty | None = None  # fitted after training (store_uncertainty), in the checkpoint
        self.mixer = None  # timm's Mixup/CutMix on training batches (--model.mixup, --model.cutmix)
        if model.mixup or model.cutmix:
            from timm.data import Mixup

            # label smoothing stays in the loss (F.cross_entropy takes it with soft targets too)
            self.mixer = Mixup(
                mixup_alpha=model.mixup, cutmix_alpha=model.cutmix, label_smoothing=0.0, num_classes=len(class_names)
            )
        self.teacher = None  # models/distill.Teacher, attached by fit (--model.teacher): not part of the checkpoint

    @classmethod
    def from_checkpoint(cls, path: str | Path, map_location: str = "cpu") -> Classifier:
        """Load a checkpoint without touching the network: the weights come from the checkpoint itself."""
        return cls.from_checkpoint_dict(read_checkpoint(path, map_location), path)

    @classmethod
    def from_checkpoint_dict(cls, ckpt: dict, path: str | Path) -> Classifier:
        """The model of a checkpoint already read (runs.read_checkpoint) from `path` (named in errors)."""
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
        found = ckpt.get(UNCERTAINTY_KEY)
        if found:
            module.uncertainty = Uncertainty.from_parts(
                found["plain"], {k: v.numpy() for k, v in found["arrays"].items()}
            )
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

    def logits_and_features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """backbone.logits_and_features of the backbone, in the module's memory layout. Eager."""
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return logits_and_features(self.backbone, images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        if self.compiled and not (self.training and self.static_batch in (None, images.shape[0])):
            return self.backbone._call_impl(images)  # eager, the module's own forward: see accelerate()
        return self.backbone(images)

    def outlier_batch(self, count: int, like: torch.Tensor) -> torch.Tensor:
        """`count` outlier-exposure images drawn from a bank of 256 (data/foreign.outlier_images, made once at the
        model's input: hidden pixels black, mean/std), randomly flipped, on `like`'s device and dtype."""
        if getattr(self, "_outliers", None) is None or self._outliers.device != like.device:
            from kvasir_mobileone.data.foreign import outlier_images

            spec = self.model_input
            bank = [spec.normalized(spec.prepare(p)) for p in outlier_images(256, spec.image_size)]
            self._outliers = torch.from_numpy(np.stack(bank)).to(like.device)
        chosen = self._outliers[torch.randint(len(self._outliers), (count,), device=like.device)]
        flip = torch.rand(count, device=like.device) < 0.5
        chosen = torch.where(flip[:, None, None, None], chosen.flip(3), chosen)
        return chosen.to(like.dtype)

    def mix(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mixup or CutMix of a training batch (timm): the mixed images and their soft targets. timm mixes pairs,
        so an odd batch's last image goes through as it is, with its own one-hot target."""
        even = len(images) - len(images) % 2
        soft = F.one_hot(targets, len(self.class_names)).to(torch.float32)
        if even >= 2:
            mixed, soft_even = self.mixer(images[:even].clone(), targets[:even])
            images = torch.cat([mixed, images[even:]])
            soft = torch.cat([soft_even.to(soft.dtype), soft[even:]])
        return images, soft

    def distill(self, images: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """The distillation term: the student's logits against the teacher's on the same images."""
        from kvasir_mobileone.models.distill import distillation_loss

        teacher_logits = self.teacher.logits(images, self.model_input)
        return distillation_loss(logits, teacher_logits, self.model_config.distill_temperature)

    def evaluation_context(self, device: torch.device):
        """fp32 for evaluation (the documented default), whatever autocast the trainer's precision set up."""
        if self.eval_precision == "32-true":
            return torch.autocast(device_type=device.type, enabled=False)
        return contextlib.nullcontext()

    def _shared_step(self, batch, stage: str) -> torch.Tensor | None:
        images, targets, indices = batch
        if not len(targets):  # every image of the batch was unreadable (reported by the data module)
            return None
        training = stage == "train"
        exposure = self.model_config.outlier_exposure if training else 0.0
        outliers = 0
        labels = targets  # what the loss compares with: the targets, or Mixup/CutMix's soft ones
        if training and self.mixer is not None:
            images, labels = self.mix(images, targets)
        if stage == "test":
            with self.evaluation_context(images.device):
                logits, features = (t.float() for t in self.logits_and_features(images.float()))
        elif exposure:
            extra = self.outlier_batch(max(1, len(images) // 2), images)
            outliers = len(extra)
            logits = self(torch.cat([images, extra]))  # one batch, as Hendrycks et al. train (BatchNorm sees both)
            logits, outlier_logits = logits[:-outliers], logits[-outliers:]
        else:
            logits = self(images)
        loss = F.cross_entropy(
            logits,
            labels,
            weight=self.loss_weights if training else None,
            label_smoothing=self.model_config.label_smoothing if training else 0.0,
        )
        if training and self.teacher is not None:  # the teacher sees the very images the student does
            weight = self.model_config.distill_weight
            distilled = self.distill(images, logits)
            loss = (1 - weight) * loss + weight * distilled
            self.log("train/distill_loss", distilled, on_step=False, on_epoch=True, batch_size=len(targets))
        if outliers:  # cross-entropy of the outliers' softmax to the uniform distribution
            uniform = (torch.logsumexp(outlier_logits.float(), dim=1) - outlier_logits.float().mean(dim=1)).mean()
            loss = loss + exposure * uniform
            self.log("train/outlier_loss", uniform, on_step=False, on_epoch=True, batch_size=outliers)
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
            statistics = torch.from_numpy(self.model_input.statistics(images.float().cpu().numpy())).float()
            statistics = statistics.to(images.device)  # float32: every backend gathers it
            self._test_batches.append(
                (indices, targets, probs, (probs + flipped) / 2, logits.detach(), features, statistics)
            )
        return loss

    def _log_epoch_metrics(self, stage: str) -> None:
        values = self.metrics[f"{stage}_"].compute()
        self.log_dict(values, prog_bar=stage != "test", sync_dist=True)
        self.metrics[f"{stage}_"].reset()

    def training_step(self, batch, batch_idx):
        if not isinstance(batch, dict):
            return self._shared_step(batch, "train")
        # with --data.unlabeled_dir: a labeled batch as always, and as many unlabeled frames that learn the
        # teacher's answers alone
        loss = self._shared_step(batch["labeled"], "train")
        frames = batch["unlabeled"][0]
        if not len(frames):
            return loss
        if self.mixer is not None:
            frames = self.mix(frames, torch.zeros(len(frames), dtype=torch.long, device=frames.device))[0]
        unlabeled = self.distill(frames, self(frames))
        self.log("train/unlabeled_distill_loss", unlabeled, on_step=False, on_epoch=True, batch_size=len(frames))
        unlabeled = self.model_config.distill_weight * unlabeled
        return unlabeled if loss is None else loss + unlabeled

    def validation_step(self, batch, batch_idx):
        self._shared_step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._shared_step(batch, "test")

    def on_fit_start(self):
        if self.teacher is not None:
            self.teacher.to(self.device)

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
        probs, probs_tta, logits = (t.reshape(-1, len(self.class_names)).float() for t in gathered[2:5])
        features = gathered[5].reshape(len(indices), -1).float()
        statistics = gathered[6].reshape(len(indices), -1).double()
        order = np.unique(indices.cpu().numpy(), return_index=True)[1]
        self._tested = TestOutputs(
            index=indices.cpu().numpy()[order],
            targets=targets.cpu().numpy()[order],
            probs=probs.cpu().numpy()[order],
            logits=logits.cpu().numpy()[order],
            features=features.cpu().numpy()[order],
            probs_tta=probs_tta.cpu().numpy()[order] if self.tta else None,
            statistics=statistics.cpu().numpy()[order],
        )
        self._test_batches.clear()

    def take_test_outputs(self) -> TestOutputs:
        """What the last trainer.test gathered, handed over once (evaluation/outputs.run_test)."""
        tested, self._tested = self._tested, None
        if tested is None:
            raise RuntimeError("No test outputs: trainer.test has not run since they were last taken.")
        return tested

    def predict_step(self, batch, batch_idx):
        """(indices, targets, logits, features, input statistics) of a batch at the evaluation precision: the
        passes over train and val images that fit the model's Uncertainty (evaluation/outputs.py)."""
        images, targets, indices = batch
        with self.evaluation_context(images.device):
            logits, features = self.logits_and_features(images.float())
        statistics = torch.from_numpy(self.model_input.statistics(images.float().cpu().numpy()))
        return indices.cpu(), targets.cpu(), logits.float().cpu(), features.float().cpu(), statistics

    def step_batch_size(self) -> int | None:
        """Images per optimizer step over every device: what the learning rate is scaled to."""
        trainer = self._trainer
        datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
        if datamodule is None or not hasattr(datamodule, "batch_size"):
            return None
        return datamodule.batch_size * trainer.world_size * trainer.accumulate_grad_batches

    def configure_optimizers(self):
        batch = self.step_batch_size()
        optimizer = build_optimizer(self.model_config, self.parameters(), batch)
        steps_per_epoch = 1
        if (
            scheduler_interval(self.model_config) == "step"
            and self._trainer is not None
            and self.hparams.max_epochs > 0
        ):
            steps_per_epoch = max(1, int(self._trainer.estimated_stepping_batches // self.hparams.max_epochs))
        scheduler = build_lr_scheduler(
            self.model_config, optimizer, self.hparams.max_epochs, batch or 0, steps_per_epoch
        )
        if lr_factor(self.model_config, batch) != 1:
            log.info(
                f"Learning rate {optimizer.defaults['lr']:.3g}: {self.model_config.lr_scaling}-scaled from "
                f"{self.model_config.lr_reference_batch} images per step (--model.lr_reference_batch) to {batch}, "
                f"{warmup_epochs(self.model_config, batch)} warmup epochs (--model.lr_scaling none keeps it)."
            )
        return {"optimizer": optimizer, "lr_scheduler": scheduler} if scheduler else optimizer


MobileOneClassifier = Classifier  # the name of releases up to 0.x: kept for one release, for code that imports it
