"""What runs a model: one `Predictor` type and one `load` that opens a run folder, a checkpoint or an exported
bundle as one. A bundle runs on onnxruntime (numpy only, no torch), on ExecuTorch (its .pte programs; imports
torch) or on Core ML (macOS); a run folder or checkpoint runs on PyTorch (models/loading.TrainedRun)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from kvasir_mobileone.answers import Uncertainty
from kvasir_mobileone.errors import UserError
from kvasir_mobileone.images import ModelInput
from kvasir_mobileone.runs import (
    COREML_NAME,
    INT8_NAME,
    METADATA_NAME,
    ONNX_NAME,
    PTE_INT8_NAME,
    PTE_NAME,
    UNCERTAINTY_NAME,
    WEIGHTS_NAME,
)

if TYPE_CHECKING:
    import torch

RUNTIMES = ("onnxruntime", "executorch", "coreml")  # what runs a bundle (`kvasir predict --runtime`)


class Predictor(Protocol):
    """A trained model, whatever holds it: what `predict`, `serve`, the video code and the explainer use.

    `outputs` takes a batch of network inputs (NCHW float32, as `model_input.read` makes them) and gives (logits,
    pooled features; None where the runtime has no features). `network()` is the fused PyTorch model (Grad-CAM).
    `metadata` is what the model says of itself beyond these: a bundle's metadata.json (test figures, intended use,
    versions), a run's own few keys."""

    source: Path
    model_name: str
    class_names: list[str]
    model_input: ModelInput
    temperature: float | None
    uncertainty: Uncertainty | None
    precision: str
    metadata: dict

    def outputs(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]: ...

    def logits(self, batch: np.ndarray) -> np.ndarray: ...

    def network(self) -> torch.nn.Module: ...


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


class Bundle:
    """What every runtime of an exported bundle shares: its metadata.json, model input, detector and fused weights."""

    def __init__(self, bundle_dir: Path, with_detector: bool = True):
        self.source = Path(bundle_dir)
        self.metadata = json.loads((self.source / METADATA_NAME).read_text())
        self.model_name: str = self.metadata["model_name"]
        self.class_names: list[str] = list(self.metadata["class_names"])
        self.model_input = ModelInput.from_dict(self.metadata["input"])
        self.temperature: float | None = self.metadata.get("temperature")
        self.uncertainty = bundle_uncertainty(self.source, self.metadata) if with_detector else None

    def logits(self, batch: np.ndarray) -> np.ndarray:
        return self.outputs(batch)[0]

    def network(self) -> torch.nn.Module:
        """The bundle's fused weights (weights.safetensors) in their timm model, eval mode."""
        import timm
        from safetensors.torch import load_file

        from kvasir_mobileone.models.backbone import fuse

        weights = self.source / WEIGHTS_NAME
        if not weights.is_file():
            raise UserError(f"{weights} is missing: the bundle is incomplete; export it again.")
        network = fuse(timm.create_model(self.model_name, num_classes=len(self.class_names)))
        network.load_state_dict(load_file(weights))
        return network.eval()


class OnnxBundle(Bundle):
    """An exported bundle, run with onnxruntime: its int8 model when it has one (precision auto or int8)."""

    def __init__(self, bundle_dir: Path, precision: str = "auto", threads: int | None = None):
        import onnxruntime as ort

        super().__init__(bundle_dir)
        has_int8 = bool(self.metadata.get("int8")) and (bundle_dir / INT8_NAME).is_file()
        self.precision = chosen_precision(precision, has_int8, f"{bundle_dir} has no int8 model", "--quantize int8")
        model = bundle_dir / (INT8_NAME if self.precision == "int8" else ONNX_NAME)
        options = ort.SessionOptions()
        if threads:  # a video: the decoder's thread works beside the model's (deploy/video.model_threads)
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def outputs(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(logits, features); features None for a graph exported before it had them."""
        found = self.session.run(None, {self.input_name: batch})
        return found[0], found[1] if len(found) > 1 else None


class ExecuTorchBundle(Bundle):
    """An exported bundle's ExecuTorch programs (model.pte, model.int8.pte), run in ExecuTorch's Python runtime:
    its int8 program when it has one (precision auto or int8)."""

    def __init__(self, bundle_dir: Path, precision: str = "auto"):
        from kvasir_mobileone.deploy.pte import PteModel

        super().__init__(bundle_dir)
        if not self.metadata.get("executorch") or not (bundle_dir / PTE_NAME).is_file():
            raise UserError(f"{bundle_dir} has no {PTE_NAME}: export it with `kvasir export RUN --format executorch`.")
        has_int8 = bool(self.metadata["executorch"].get("int8")) and (bundle_dir / PTE_INT8_NAME).is_file()
        missing = f"{bundle_dir} has no int8 ExecuTorch program"
        self.precision = chosen_precision(precision, has_int8, missing, "--format executorch --quantize int8")
        self.program = PteModel(bundle_dir / (PTE_INT8_NAME if self.precision == "int8" else PTE_NAME))

    def outputs(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        return self.program.outputs(batch)


class CoreMLBundle(Bundle):
    """A bundle's .mlpackage run by Core ML (macOS only), for `kvasir predict --runtime coreml`."""

    def __init__(self, bundle_dir: Path):
        import platform

        from kvasir_mobileone.deploy.coreml import CHECK_ON_MAC, require_coremltools

        ct = require_coremltools()
        if platform.system() != "Darwin":
            raise UserError(
                "Core ML models run only on macOS (coremltools converts on Linux but cannot run them). On a Mac: "
                f"{CHECK_ON_MAC}."
            )
        path = bundle_dir / COREML_NAME
        if not path.exists():
            raise UserError(f"{bundle_dir} has no {COREML_NAME}: export it with `kvasir export RUN --format coreml`.")
        super().__init__(bundle_dir, with_detector=False)  # the graph gives probabilities only: no detector
        self.precision = "fp32"
        self.model = ct.models.MLModel(str(path))

    def outputs(self, batch: np.ndarray) -> tuple[np.ndarray, None]:
        return self._log_probabilities(batch), None

    def _log_probabilities(self, batch: np.ndarray) -> np.ndarray:
        """Network inputs turned back into pixels (the graph does its own preprocessing), as log-probabilities
        scaled by the temperature, so that `probabilities` gives back the model's answer."""
        from PIL import Image

        mean, std = np.asarray(self.model_input.mean)[:, None, None], np.asarray(self.model_input.std)[:, None, None]
        names = self.class_names
        out = []
        for x in batch:
            pixels = np.clip(np.rint((x * std + mean) * 255), 0, 255).astype(np.uint8).transpose(1, 2, 0)
            probs = self.model.predict({"image": Image.fromarray(pixels)})["classLabel_probs"]
            out.append([np.log(max(probs[n], 1e-12)) for n in names])
        return np.asarray(out, np.float32) * float(self.temperature or 1.0)


def load(
    model: str | Path, precision: str = "auto", runtime: str = "onnxruntime", threads: int | None = None
) -> Predictor:
    """The one way to open a model: a bundle on `runtime` (its int8 model unless precision is fp32), or a run folder
    / checkpoint on PyTorch (models/loading.open_run); `threads`: onnxruntime's intra-op threads (its own choice
    when None)."""
    path = Path(model)
    if is_bundle(path):
        if runtime == "executorch":
            return ExecuTorchBundle(path, precision)
        if runtime == "coreml":
            return CoreMLBundle(path)
        return OnnxBundle(path, precision, threads)
    if not path.exists():
        raise UserError(f"--model {model}: no such bundle, run folder or checkpoint.")
    if runtime != "onnxruntime":
        raise UserError(f"--runtime {runtime} runs an exported bundle; {model} is a run folder or checkpoint.")
    from kvasir_mobileone.models.loading import open_run

    return open_run(path)
