"""A trained model from a run folder or a lone checkpoint, on PyTorch: the training side (its run, data and
manifest) for `test`, `export`, `features` and `audit`, and a deploy/runtime.Predictor for the rest."""

from __future__ import annotations

import contextlib
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import timm
import torch

from kvasir_mobileone.data.datamodule import DataConfig
from kvasir_mobileone.data.split import check_manifest_files, read_manifest
from kvasir_mobileone.errors import UserError
from kvasir_mobileone.images import ModelInput
from kvasir_mobileone.io import file_sha256
from kvasir_mobileone.models.backbone import create_backbone, fuse, model_input_for
from kvasir_mobileone.models.classifier import Classifier
from kvasir_mobileone.models.distill import Teacher, TeacherRecord
from kvasir_mobileone.models.trainer import TrainerConfig, evaluation_precision, precision_context
from kvasir_mobileone.runs import RunError, RunFolder, existing_data_dir, read_checkpoint, resolve


@dataclass
class TrainedRun:
    """A checkpoint with what it needs to run: its run folder (None for a lone checkpoint), the run's resolved
    configuration (from config.yaml, or the copy inside the checkpoint), the model in eval mode, its input
    normalization (from the checkpoint) and the fitted temperature."""

    ckpt: Path
    run: RunFolder | None
    config: dict
    module: Classifier
    model_input: ModelInput
    temperature: float | None
    data_dir_override: str | None = None

    @property
    def model_name(self) -> str:
        return self.module.model_config.name

    @property
    def class_names(self) -> list[str]:
        return self.module.class_names

    @property
    def uncertainty(self):
        return self.module.uncertainty

    @property
    def metadata(self) -> dict:
        """A bundle's metadata.json holds its test figures and intended use; a run keeps those in its folder."""
        return {}

    def outputs(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(logits, pooled features) of NCHW float32 network inputs, at the run's evaluation precision."""
        with self.evaluating():
            logits, features = self.module.logits_and_features(torch.from_numpy(batch))
        return logits.float().numpy(), features.float().numpy()

    def logits(self, batch: np.ndarray) -> np.ndarray:
        with self.evaluating():
            return self.module(torch.from_numpy(batch)).float().numpy()

    def network(self) -> torch.nn.Module:
        """The fused copy of the trained network (eval mode, fp32), as a bundle ships it."""
        return fuse(self.module.backbone).eval()

    @property
    def home(self) -> RunFolder:
        """Where this model's outputs go: its run folder, or for a lone checkpoint the checkpoint's folder."""
        return self.run or RunFolder(self.ckpt.parent)

    @property
    def source(self) -> Path:
        """What a user named: the run folder, or the lone checkpoint."""
        return self.run.root if self.run else self.ckpt

    @property
    def data(self) -> DataConfig:
        """The run's data settings, with the data folder the user pointed to, if any."""
        data = DataConfig(**self.config.get("data", {}))
        return dataclasses.replace(data, data_dir=self.data_dir_override) if self.data_dir_override else data

    @property
    def trainer_config(self) -> TrainerConfig:
        """The run's recorded trainer settings (those this release knows: a run recorded under another one may
        hold more)."""
        known = {f.name for f in dataclasses.fields(TrainerConfig)}
        return TrainerConfig(**{k: v for k, v in self.config.get("trainer", {}).items() if k in known})

    @property
    def precision(self) -> str:
        """The run's evaluation precision (--trainer.eval_precision: 32-true, or the training precision)."""
        return evaluation_precision(self.trainer_config)

    def evaluating(self, device_type: str = "cpu"):
        """Gradients off and the run's evaluation precision: how every command outside a Trainer runs the model."""
        return _evaluating(self.precision, device_type)

    def data_dir(self) -> Path:
        """The run's data folder; a clear error naming --data_dir when it is gone."""
        return existing_data_dir(self.config.get("data", {}).get("data_dir"), self.data_dir_override, str(self.ckpt))

    def manifest_rows(self, manifest: str | None = None) -> tuple[list[dict[str, str]], Path]:
        """The split manifest (the run's, or the one given), checked against the data folder."""
        if manifest is None and self.run is None:
            raise RunError(f"{self.ckpt} is a lone checkpoint: pass --manifest with the split to use.")
        path, data_dir = Path(manifest) if manifest else self.run.manifest, self.data_dir()
        rows = read_manifest(path)
        check_manifest_files(rows, data_dir, path)
        return rows, path


@contextlib.contextmanager
def _evaluating(precision: str, device_type: str):
    with torch.no_grad(), precision_context(precision, device_type):
        yield


def open_run(run_or_ckpt: str | Path, data_dir: str | None = None) -> TrainedRun:
    ckpt, run = resolve(run_or_ckpt)
    module = Classifier.from_checkpoint_dict(read_checkpoint(ckpt), ckpt)
    config = run.read_config() if run else dict(module.hparams.get("run_config") or {})
    temperature = json.loads(run.temperature.read_text())["temperature"] if run and run.temperature.is_file() else None
    return TrainedRun(ckpt, run, config, module, module.model_input, temperature, data_dir)


def load_teacher(spec: str, weights: str | None, class_names: list[str]) -> Teacher:
    """The teacher of a distillation (models/distill.py): --model.teacher, a run folder or checkpoint of this tool
    (any timm model it trained), or a timm model name with --model.teacher_weights FILE (a timm checkpoint or
    .safetensors whose head answers the same classes)."""
    if Path(spec).exists():
        if weights:
            raise UserError(
                f"--model.teacher {spec} is a run (its weights are in its checkpoint): leave --model.teacher_weights "
                "out, or name a timm model with --model.teacher."
            )
        trained = open_run(spec)
        if list(trained.class_names) != list(class_names):
            raise UserError(
                f"--model.teacher {spec} answers {list(trained.class_names)}, the student {list(class_names)}: a "
                "teacher must know the same classes in the same order (train it on the same folder)."
            )
        name, source, checksum = trained.model_name, Path(spec), file_sha256(trained.ckpt)
        network, model_input = trained.module.backbone, trained.module.model_input
    else:
        if not weights:
            raise UserError(
                f"--model.teacher {spec!r} is neither a run folder nor a checkpoint. To use a timm model as the "
                "teacher, give its weights for these classes with --model.teacher_weights FILE (a run of "
                "`kvasir fit --model.name NAME` is the simplest way to get them)."
            )
        network = create_backbone(spec, len(class_names), pretrained=False)
        try:  # strict: the head must be the file's (timm's pretrained path would drop a head of another size)
            timm.models.load_checkpoint(network, weights, strict=True)
        except (RuntimeError, KeyError, OSError) as err:
            raise UserError(
                f"--model.teacher_weights {weights}: not the weights of a {spec} with a {len(class_names)}-class "
                f"head ({str(err).splitlines()[0]}). For a teacher trained with `kvasir fit`, give its run folder as "
                "--model.teacher instead."
            ) from err
        name, source, checksum, model_input = spec, Path(weights), file_sha256(weights), model_input_for(spec)
    record = TeacherRecord(name, str(source.resolve()), checksum, model_input.image_size)
    return Teacher(network, model_input, record)
