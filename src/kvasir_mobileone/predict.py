"""`kvasir predict`: top-k classes for image files, folders or globs, from a checkpoint or an exported bundle.

With a bundle (a folder holding model.onnx and metadata.json) this module runs on onnxruntime, numpy and Pillow
alone: Lightning, timm and torch are imported only for checkpoints and for --explain.
"""

from __future__ import annotations

import glob
import json
from pathlib import Path
from typing import Literal

import numpy as np
from tqdm import tqdm

from kvasir_mobileone.images import decode_resized
from kvasir_mobileone.io import IMAGE_EXTENSIONS, write_csv, write_json
from kvasir_mobileone.stats import apply_temperature, softmax


def expand_inputs(inputs: list[str]) -> list[Path]:
    """Files as given, folders searched recursively for images, globs expanded; sorted, no duplicates."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found += [p for p in sorted(path.rglob("*")) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
        elif path.exists():
            found.append(path)
        else:
            matches = sorted(glob.glob(item, recursive=True))
            if not matches:
                raise FileNotFoundError(f"{item} is not a file, a folder or a glob that matches anything.")
            found += [Path(m) for m in matches if Path(m).is_file()]
    return list(dict.fromkeys(found))


def preprocess(path: Path, model_input: dict) -> tuple[np.ndarray, np.ndarray]:
    """(CHW float32 network input, HWC uint8 resized image) as in training: decode_resized, then normalize."""
    pixels = decode_resized(path, model_input["image_size"], model_input.get("interpolation", "bilinear"))
    mean, std = np.asarray(model_input["mean"], np.float32), np.asarray(model_input["std"], np.float32)
    return ((pixels.astype(np.float32) / 255.0 - mean) / std).transpose(2, 0, 1), pixels


class OnnxBundle:
    """An exported bundle, run with onnxruntime."""

    def __init__(self, bundle_dir: Path):
        import onnxruntime as ort

        self.metadata = json.loads((bundle_dir / "metadata.json").read_text())
        self.session = ort.InferenceSession(str(bundle_dir / "model.onnx"), providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def logits(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: batch})[0]


class TorchCheckpoint:
    """A run folder or Lightning checkpoint, run with PyTorch."""

    def __init__(self, run: str):
        import torch

        from kvasir_mobileone.evaluate import open_run

        trained = open_run(run)
        self.module, norm = trained.module, trained.norm
        self.metadata = {
            "model_name": self.module.cfg.name,
            "class_names": self.module.class_names,
            "input": {"image_size": norm.image_size, "mean": list(norm.mean), "std": list(norm.std),
                      "interpolation": norm.interpolation},
            "temperature": trained.temperature,
        }  # fmt: skip
        self._torch = torch

    def logits(self, batch: np.ndarray) -> np.ndarray:
        with self._torch.no_grad():
            return self.module(self._torch.from_numpy(batch)).float().numpy()


def load_predictor(model: str) -> OnnxBundle | TorchCheckpoint:
    path = Path(model)
    if (path / "model.onnx").is_file() and (path / "metadata.json").is_file():
        return OnnxBundle(path)
    return TorchCheckpoint(model)


def predict(
    inputs: list[str],
    model: str = "bundle",
    out: str | None = None,
    top_k: int = 3,
    batch_size: int = 32,
    output_format: Literal["csv", "json"] | None = None,
    tta: bool = False,
    explain: bool = False,
    explain_dir: str = "explanations",
) -> list[dict]:
    """Classify images with a bundle (onnxruntime) or a run/checkpoint (PyTorch); unreadable files are listed.

    Probabilities use the model's fitted temperature when it has one; --tta true averages in the flipped image."""
    predictor = load_predictor(model)
    meta = predictor.metadata
    class_names = meta["class_names"]
    paths = expand_inputs(inputs)
    top_k = min(top_k, len(class_names))
    results: list[dict] = []
    for start in tqdm(range(0, len(paths), batch_size), desc="predict", unit="batch"):
        arrays, good = [], []
        for path in paths[start : start + batch_size]:
            try:
                arrays.append(preprocess(path, meta["input"])[0])
                good.append(path)
            except Exception as err:  # any unreadable file is reported, never fatal
                results.append({"path": str(path), "error": f"{type(err).__name__}: {err}"})
        if not good:
            continue
        batch = np.stack(arrays)
        probs = softmax(predictor.logits(batch))
        if tta:
            probs = (probs + softmax(predictor.logits(np.ascontiguousarray(batch[..., ::-1])))) / 2
        if meta.get("temperature"):  # as in `kvasir test`: views averaged first, then the temperature
            probs = apply_temperature(probs, meta["temperature"])
        for path, p in zip(good, probs, strict=True):
            order = np.argsort(-p)[:top_k]
            results.append(
                {"path": str(path), "error": ""}
                | {f"top{i + 1}": class_names[j] for i, j in enumerate(order)}
                | {f"p{i + 1}": round(float(p[j]), 6) for i, j in enumerate(order)}
            )
    results.sort(key=lambda r: r["path"])
    _print_table(results, top_k)
    if out:
        write_predictions(Path(out), results, top_k, output_format)
    if explain:
        from kvasir_mobileone.explain import explain_images

        explain_images([Path(r["path"]) for r in results if not r["error"]], model, Path(explain_dir))
    return results


def write_predictions(out: Path, results: list[dict], top_k: int, output_format: str | None = None) -> Path:
    if (output_format or out.suffix.lstrip(".")) == "json":
        return write_json(out, results)
    header = ["path", *[k for i in range(top_k) for k in (f"top{i + 1}", f"p{i + 1}")], "error"]
    return write_csv(out, header, [[r.get(k, "") for k in header] for r in results])


def _print_table(results: list[dict], top_k: int, limit: int = 20) -> None:
    bad = [r for r in results if r["error"]]
    for r in [r for r in results if not r["error"]][:limit]:
        guesses = ", ".join(f"{r[f'top{i + 1}']} {r[f'p{i + 1}']:.3f}" for i in range(top_k))
        print(f"{r['path']:<60}  {guesses}")
    if len(results) - len(bad) > limit:
        print(f"... {len(results) - len(bad) - limit} more")
    for r in bad:
        print(f"UNREADABLE {r['path']}: {r['error']}")
    print(f"{len(results) - len(bad)} images classified, {len(bad)} unreadable.")
