"""What runs a model for `predict` and `explain`: an exported bundle on onnxruntime (numpy only, no torch), on
ExecuTorch (its .pte programs; imports torch) or on Core ML (macOS), or a run folder / checkpoint on PyTorch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from kvasir_mobileone.answers import Uncertainty
from kvasir_mobileone.errors import UserError
from kvasir_mobileone.images import ModelInput
from kvasir_mobileone.runs import INT8_NAME, METADATA_NAME, ONNX_NAME, PTE_INT8_NAME, PTE_NAME, UNCERTAINTY_NAME

RUNTIMES = ("onnxruntime", "executorch", "coreml")  # what runs a bundle (`kvasir predict --runtime`)


def is_bundle(path: Path) -> bool:
    return (path / ONNX_NAME).is_file() and (path / METADATA_NAME).is_file()


def chosen_precision(precision: str, has_int8: bool, missing: str, how: str) -> str:
    """int8 when the bundle has it, unless --precision fp32; a UserError when int8 is asked for and absent."""
    if precision == "int8" and not has_int8:
        raise UserError(f"{missing}: export it with {how}, or use --precision fp32.")
    return "int8" if has_int8 and precision != "fp32" else "fp32"


def bundle_uncertainty(bundle_dir: Path, metadata: dict) -> Uncertainty | None:
    """The bundle's detector and thresholds (metadata.json "uncertainty" and uncertainty.npz); None when it has
    none (exported before a detector was fitted, or by an older release)."""
    plain = metadata.get("uncertainty")
    if not plain:
        return None
    arrays_path = bundle_dir / UNCERTAINTY_NAME
    if plain["detector"] != "energy" and not arrays_path.is_file():
        raise UserError(f"{arrays_path} is missing: the bundle is incomplete; export it again.")
    if not arrays_path.is_file():  # energy reads the logits alone
        return Uncertainty.from_parts(plain, {})
    with np.load(arrays_path) as arrays:
        return Uncertainty.from_parts(plain, {k: arrays[k] for k in arrays.files})


class OnnxBundle:
    """An exported bundle, run with onnxruntime: its int8 model when it has one (precision auto or int8)."""

    def __init__(self, bundle_dir: Path, precision: str = "auto", threads: int | None = None):
        import onnxruntime as ort

        self.metadata = json.loads((bundle_dir / METADATA_NAME).read_text())
        self.model_input = ModelInput.from_dict(self.metadata["input"])
        has_int8 = bool(self.metadata.get("int8")) and (bundle_dir / INT8_NAME).is_file()
        self.precision = chosen_precision(precision, has_int8, f"{bundle_dir} has no int8 model", "--quantize int8")
        model = bundle_dir / (INT8_NAME if self.precision == "int8" else ONNX_NAME)
        options = ort.SessionOptions()
        if threads:  # a video: the decoder's thread works beside the model's (deploy/video.model_threads)
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.uncertainty = bundle_uncertainty(bundle_dir, self.metadata)

    def outputs(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(logits, features); features None for a graph exported before it had them."""
        found = self.session.run(None, {self.input_name: batch})
        return found[0], found[1] if len(found) > 1 else None

    def logits(self, batch: np.ndarray) -> np.ndarray:
        return self.outputs(batch)[0]


class ExecuTorchBundle:
    """An exported bundle's ExecuTorch programs (model.pte, model.int8.pte), run in ExecuTorch's Python runtime:
    its int8 program when it has one (precision auto or int8)."""

    def __init__(self, bundle_dir: Path, precision: str = "auto"):
        from kvasir_mobileone.deploy.pte import PteModel

        self.metadata = json.loads((bundle_dir / METADATA_NAME).read_text())
        self.model_input = ModelInput.from_dict(self.metadata["input"])
        if not self.metadata.get("executorch") or not (bundle_dir / PTE_NAME).is_file():
            raise UserError(f"{bundle_dir} has no {PTE_NAME}: export it with `kvasir export RUN --format executorch`.")
        has_int8 = bool(self.metadata["executorch"].get("int8")) and (bundle_dir / PTE_INT8_NAME).is_file()
        missing = f"{bundle_dir} has no int8 ExecuTorch program"
        self.precision = chosen_precision(precision, has_int8, missing, "--format executorch --quantize int8")
        self.program = PteModel(bundle_dir / (PTE_INT8_NAME if self.precision == "int8" else PTE_NAME))
        self.uncertainty = bundle_uncertainty(bundle_dir, self.metadata)

    def outputs(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        return self.program.outputs(batch)

    def logits(self, batch: np.ndarray) -> np.ndarray:
        return self.program.logits(batch)


class TorchCheckpoint:
    """A run folder or Lightning checkpoint, run with PyTorch at the run's evaluation precision (fp32 unless
    --trainer.eval_precision as-training)."""

    def __init__(self, run: str):
        import torch

        from kvasir_mobileone.models.loading import open_run

        trained = open_run(run)
        self.trained, self.module, self.model_input = trained, trained.module, trained.model_input
        self.precision = trained.precision
        self.metadata = {
            "model_name": self.module.cfg.name,
            "class_names": self.module.class_names,
            "input": self.model_input.to_dict(),
            "temperature": trained.temperature,
            "precision": trained.precision,
        }
        self._torch = torch
        self.uncertainty = self.module.uncertainty

    def outputs(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with self.trained.evaluating():
            logits, features = self.module.logits_and_features(self._torch.from_numpy(batch))
        return logits.float().numpy(), features.float().numpy()

    def logits(self, batch: np.ndarray) -> np.ndarray:
        with self.trained.evaluating():
            return self.module(self._torch.from_numpy(batch)).float().numpy()


def load_predictor(model: str, precision: str = "auto", runtime: str = "onnxruntime", threads: int | None = None):
    """A bundle on `runtime` (its int8 model unless precision is fp32) or a run folder / checkpoint (PyTorch);
    `threads`: onnxruntime's intra-op threads (its own choice when None)."""
    path = Path(model)
    if is_bundle(path):
        if runtime == "executorch":
            return ExecuTorchBundle(path, precision)
        if runtime == "coreml":
            from kvasir_mobileone.deploy.coreml import CoreMLBundle

            return CoreMLBundle(path, json.loads((path / METADATA_NAME).read_text()))
        return OnnxBundle(path, precision, threads)
    if not path.exists():
        raise UserError(f"--model {model}: no such bundle, run folder or checkpoint.")
    if runtime != "onnxruntime":
        raise UserError(f"--runtime {runtime} runs an exported bundle; {model} is a run folder or checkpoint.")
    return TorchCheckpoint(model)
