"""Core ML: the fused model as an .mlpackage (ML program) with the preprocessing inside the graph, so that an app
hands it a whole frame as an image: Vision scales it to the input size (scaleFill, no crop), the graph blacks out
what the model never saw (mask boxes, field of view), applies the per-channel mean and std, runs the network and
returns class probabilities with the run's temperature.

Conversion runs anywhere coremltools installs; running an .mlpackage needs macOS. Here the graph's preprocessing is
checked in PyTorch against `kvasir predict`; the Core ML runtime is not (see `CHECK_ON_MAC`)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from kvasir_mobileone.extras import require
from kvasir_mobileone.images import ModelInput

CHECK_ON_MAC = "kvasir predict IMAGES --model BUNDLE --runtime coreml (macOS; compare with --runtime onnxruntime)"


def require_coremltools():
    return require("coremltools", "mobile")


class WithPreprocessing(torch.nn.Module):
    """RGB pixels (0-255, NCHW float, the input size) -> class probabilities, as `kvasir predict` computes them:
    hidden pixels black, then (x / 255 - mean) / std, the network, softmax(logits / temperature)."""

    def __init__(self, network: torch.nn.Module, model_input: ModelInput, temperature: float | None):
        super().__init__()
        self.network = network.eval()
        size = model_input.image_size
        hidden = model_input.hidden()
        visible = np.ones((size, size), np.float32) if hidden is None else (~hidden).astype(np.float32)
        self.register_buffer("visible", torch.from_numpy(visible)[None, None])
        self.register_buffer("mean", torch.tensor(model_input.mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(model_input.std, dtype=torch.float32).view(1, 3, 1, 1))
        self.temperature = float(temperature or 1.0)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = (image * self.visible / 255.0 - self.mean) / self.std
        return torch.softmax(self.network(x) / self.temperature, dim=1)


def export_coreml(network: torch.nn.Module, metadata: dict, path: Path) -> Path:
    """Write the .mlpackage (a folder) whole: converted in a temporary folder beside it, then renamed."""
    ct = require_coremltools()
    model_input = ModelInput.from_dict(metadata["input"])
    size = model_input.image_size
    wrapped = WithPreprocessing(network, model_input, metadata.get("temperature")).eval()
    example = torch.rand(1, 3, size, size) * 255
    with torch.no_grad():
        traced = torch.jit.trace(wrapped, example)
    mlmodel = ct.convert(
        traced,
        inputs=[ct.ImageType(name="image", shape=(1, 3, size, size), scale=1.0, color_layout=ct.colorlayout.RGB)],
        classifier_config=ct.ClassifierConfig(list(metadata["class_names"])),
        convert_to="mlprogram",
        minimum_deployment_target=ct.target.iOS16,
        compute_precision=ct.precision.FLOAT32,
    )
    mlmodel.short_description = (
        f"{metadata['model_name']} for GI endoscopy images. Feed the whole frame (Vision: imageCropAndScaleOption "
        "= .scaleFill; the default centre crop is not what it was trained on). Research use only, not a medical device."
    )
    mlmodel.input_description["image"] = f"RGB frame scaled to {size} x {size} (no crop)"
    mlmodel.user_defined_metadata["kvasir_input"] = "hidden pixels black, then (x / 255 - mean) / std, in the graph"
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        staged = Path(tmp) / path.name
        mlmodel.save(str(staged))
        if path.exists():
            shutil.rmtree(path)
        staged.replace(path)
    return path


def preprocessing_parity(network: torch.nn.Module, metadata: dict, pixels: np.ndarray, reference: np.ndarray):
    """The graph's preprocessing in PyTorch on raw resized pixels (N, H, W, 3 uint8, nothing hidden) against the
    probabilities of `kvasir predict` (`reference`): {max_abs, top1_agreement}."""
    model_input = ModelInput.from_dict(metadata["input"])
    wrapped = WithPreprocessing(network, model_input, metadata.get("temperature")).eval()
    with torch.no_grad():
        probs = wrapped(torch.from_numpy(pixels).permute(0, 3, 1, 2).float()).numpy()
    return {
        "max_abs": float(np.abs(probs - reference).max()),
        "top1_agreement": float((probs.argmax(1) == reference.argmax(1)).mean()),
    }
