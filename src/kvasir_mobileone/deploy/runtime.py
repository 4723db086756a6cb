"""What runs a model for `predict` and `explain`: an exported bundle on onnxruntime (numpy only, no torch), or a
run folder / checkpoint on PyTorch in fp32."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from kvasir_mobileone.errors import UserError

ONNX_NAME, WEIGHTS_NAME, METADATA_NAME = "model.onnx", "model.safetensors", "metadata.json"


def is_bundle(path: Path) -> bool:
    return (path / ONNX_NAME).is_file() and (path / METADATA_NAME).is_file()


class OnnxBundle:
    """An exported bundle, run with onnxruntime."""

    def __init__(self, bundle_dir: Path):
        import onnxruntime as ort

        self.metadata = json.loads((bundle_dir / METADATA_NAME).read_text())
        self.session = ort.InferenceSession(str(bundle_dir / ONNX_NAME), providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def logits(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: batch})[0]


class TorchCheckpoint:
    """A run folder or Lightning checkpoint, run with PyTorch in fp32."""

    def __init__(self, run: str):
        import torch

        from kvasir_mobileone.models.loading import open_run

        trained = open_run(run)
        self.module, norm = trained.module, trained.norm
        self.metadata = {
            "model_name": self.module.cfg.name,
            "class_names": self.module.class_names,
            "input": norm.to_dict(),
            "temperature": trained.temperature,
        }
        self._torch = torch

    def logits(self, batch: np.ndarray) -> np.ndarray:
        with self._torch.no_grad():
            return self.module(self._torch.from_numpy(batch)).float().numpy()


def load_predictor(model: str) -> OnnxBundle | TorchCheckpoint:
    path = Path(model)
    if is_bundle(path):
        return OnnxBundle(path)
    if not path.exists():
        raise UserError(f"--model {model}: no such bundle, run folder or checkpoint.")
    return TorchCheckpoint(model)
