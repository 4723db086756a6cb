"""Grad-CAM heatmaps (pytorch-grad-cam) over the predicted class, saved as PNGs beside the original image."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from kvasir_mobileone.deploy.runtime import Predictor
from kvasir_mobileone.evaluation.stats import apply_temperature
from kvasir_mobileone.extras import require
from kvasir_mobileone.io import pyplot, save_figure

plt = pyplot()


def show_cam_on_image(*args, **kwargs) -> np.ndarray:
    """pytorch-grad-cam's overlay of a heatmap on an image (the 'explain' extra)."""
    return require("pytorch_grad_cam.utils.image", "explain").show_cam_on_image(*args, **kwargs)


def target_layer(network: torch.nn.Module) -> torch.nn.Module:
    """The last feature stage (timm MobileOne, ByobNet, ...), else the last convolution."""
    stages = getattr(network, "stages", None)
    if stages is not None and len(stages):
        return stages[-1]
    return [m for m in network.modules() if isinstance(m, torch.nn.Conv2d)][-1]


def output_names(paths: list[Path]) -> list[str]:
    """A PNG name per image that no other image shares: its path below the images' common folder, with folder
    separators turned into "__" (two `img.jpg` in different folders get different names)."""
    resolved = [p.resolve() for p in paths]
    common = Path(os.path.commonpath([p.parent for p in resolved])) if resolved else Path()
    return ["__".join(p.relative_to(common).with_suffix("").parts) + "_gradcam.png" for p in resolved]


class Explainer:
    """Grad-CAM on the top-1 class of a loaded model (deploy/runtime.load): its fused PyTorch network, made once."""

    def __init__(self, predictor: Predictor):
        self.network = predictor.network()
        self.class_names, self.temperature = predictor.class_names, predictor.temperature
        self.model_input = predictor.model_input
        self.cam = require("pytorch_grad_cam", "explain").GradCAM(
            model=self.network, target_layers=[target_layer(self.network)]
        )

    def explain(self, array: np.ndarray, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(Grad-CAM overlay as HWC uint8 over the network's input image, class probabilities as predict reports
        them) for one CHW network input and its HWC uint8 image."""
        x = torch.from_numpy(array)[None]
        with torch.no_grad():
            probs = self.network(x).softmax(dim=1)[0].numpy()
        if self.temperature:  # the same probability as `kvasir predict` reports
            probs = apply_temperature(probs[None], self.temperature)[0]
        heat = self.cam(input_tensor=x, targets=None)[0]  # None: the highest-scoring class
        return show_cam_on_image(pixels.astype(np.float32) / 255.0, heat, use_rgb=True), probs

    def heatmaps(self, batch: np.ndarray, chunk: int = 16) -> np.ndarray:
        """Grad-CAM of the top-1 class for NCHW network inputs: (N, H, W) in [0, 1] at the input size."""
        return np.concatenate(
            [
                self.cam(input_tensor=torch.from_numpy(batch[i : i + chunk]), targets=None)
                for i in range(0, len(batch), chunk)
            ]
        )


def over_frame(frame: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """A heatmap computed at the network's input size laid over the frame as taken (HWC uint8, any aspect ratio):
    the input is the frame stretched to a square, so the heatmap is stretched back to the frame's shape."""
    from PIL import Image

    height, width = frame.shape[:2]
    resized = np.asarray(Image.fromarray(heat.astype(np.float32), mode="F").resize((width, height), Image.BILINEAR))
    return show_cam_on_image(frame.astype(np.float32) / 255.0, np.clip(resized, 0, 1), use_rgb=True)


def explain_images(paths: list[Path], predictor: Predictor, out_dir: Path) -> list[Path]:
    """One PNG per image: the image and its Grad-CAM overlay for the top-1 class, with class and probability."""
    explainer = Explainer(predictor)
    size = explainer.model_input.image_size
    class_names = explainer.class_names
    written = []
    for path, name in tqdm(list(zip(paths, output_names(paths), strict=True)), desc="explain", unit="img"):
        array, pixels = explainer.model_input.read(path)
        overlay, probs = explainer.explain(array, pixels)
        top = int(probs.argmax())
        fig, axes = plt.subplots(1, 2, figsize=(8, 4.4))
        axes[0].imshow(pixels)
        axes[0].set_title("input")
        axes[1].imshow(overlay)
        axes[1].set_title("Grad-CAM (red: most evidence)")
        for ax in axes:
            ax.set_xlabel(f"x (pixels at {size}×{size})")
            ax.set_ylabel("y (pixels)")
        fig.suptitle(f"{path.name}: predicted {class_names[top]} (p = {float(probs[top]):.3f})")
        written.append(save_figure(fig, out_dir / name, dpi=100))
    return written
