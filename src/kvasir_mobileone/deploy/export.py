"""`kvasir export`: reparameterize a copy of the model, write ONNX + safetensors + metadata, check parity."""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.metadata
import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from kvasir_mobileone.data.folder import expand_inputs
from kvasir_mobileone.errors import UserError
from kvasir_mobileone.images import ModelInput
from kvasir_mobileone.io import atomic_path, file_sha256
from kvasir_mobileone.models.backbone import LogitsAndFeatures, fuse, parameter_count
from kvasir_mobileone.models.loading import TrainedRun
from kvasir_mobileone.runs import FIELD_OF_VIEW_NAME, ONNX_NAME, WEIGHTS_NAME

INPUT_NAME, OUTPUT_NAME, FEATURES_OUTPUT = "image", "logits", "features"
FORMATS = ("onnx", "executorch", "coreml")  # `kvasir export --format`: ONNX always, the others on request
LIBRARIES = ("torch", "torchvision", "timm", "lightning", "onnx", "onnxruntime", "safetensors")


class ParityError(UserError):
    """The fused or exported model disagrees with the trained one beyond tolerance."""


def parity(reference: np.ndarray, candidate: np.ndarray) -> dict:
    """Max absolute difference, max difference relative to the largest reference logit, top-1 agreement."""
    diff = np.abs(reference - candidate)
    return {
        "max_abs": float(diff.max()),
        "max_rel": float(diff.max() / max(np.abs(reference).max(), 1e-12)),
        "top1_agreement": float((reference.argmax(1) == candidate.argmax(1)).mean()),
    }


def weights_bytes(model: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def export_onnx(model: torch.nn.Module, example: torch.Tensor, path: Path, opset: int) -> Path:
    """ONNX with a dynamic batch axis and two outputs (logits, features), written whole or not at all."""
    with atomic_path(path) as tmp:
        torch.onnx.export(
            LogitsAndFeatures(model),
            (example,),
            str(tmp),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME, FEATURES_OUTPUT],
            dynamic_axes={name: {0: "batch"} for name in (INPUT_NAME, OUTPUT_NAME, FEATURES_OUTPUT)},
            opset_version=opset,
            dynamo=False,  # the TorchScript exporter: plain CNNs export cleanly, with no onnxscript rewrite
        )
    return path


def onnx_logits(path: Path, images: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run([OUTPUT_NAME], {INPUT_NAME: images})[0]


def library_versions() -> dict[str, str]:
    versions = {"kvasir-mobileone": importlib.metadata.version("kvasir-mobileone")}
    for name in LIBRARIES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[name] = importlib.metadata.version(name)
    return versions


def parity_images(trained: TrainedRun, images: str | None, count: int) -> list[Path]:
    """Real images to check parity on: a folder given with --images, or the run's test split."""
    if images:
        paths = expand_inputs([images])[:count]
    elif trained.run:
        rows, _ = trained.manifest_rows()
        paths = [trained.data_dir() / r["path"] for r in rows if r["split"] == "test"][:count]
    else:
        paths = []
    if not paths:
        raise UserError(
            "Parity needs real images: export a run folder whose dataset is present (--data_dir when it moved), "
            "or pass --images DIR."
        )
    return paths


def fused_onnx(unfused: torch.nn.Module, batch: torch.Tensor, onnx_path: Path, opset: int):
    """(the fused copy, parity figures): the model folded in eval mode and fp32 on a copy (the checkpoint's
    training-time model stays as it is), written as ONNX, and its logits on `batch` compared at each step."""
    fused = fuse(unfused)
    with torch.no_grad():
        reference = unfused(batch).numpy()
        fused_logits = fused(batch).numpy()
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    export_onnx(fused, batch[:1], onnx_path, opset)
    checks = {
        "unfused_vs_fused_torch": parity(reference, fused_logits),
        "fused_torch_vs_onnxruntime": parity(fused_logits, onnx_logits(onnx_path, batch.numpy())),
    }
    return fused, checks


def require_parity(checks: dict, tolerance: float, out_dir: Path) -> None:
    """ParityError unless every step keeps the logits within `tolerance` (relative) and every top-1 class."""
    failed = [n for n, c in checks.items() if c["max_rel"] > tolerance or c["top1_agreement"] < 1.0]
    if failed:
        raise ParityError(
            f"Parity failed for {', '.join(failed)} (tolerance {tolerance} relative, 100% top-1): {checks}. "
            f"The bundle in {out_dir} must not be used; check that the checkpoint was trained (random-init "
            "BatchNorm statistics make activations explode) and report the versions in use."
        )


def save_weights(model: torch.nn.Module, path: Path) -> Path:
    """A model's weights as safetensors, written whole."""
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    return path


def bundle_sizes(unfused, fused, ckpt: Path, weights: Path, onnx: Path) -> dict:
    """Parameters and bytes before and after fusing."""
    return {
        "parameters_unfused": parameter_count(unfused),
        "parameters_fused": parameter_count(fused),
        "weights_bytes_unfused": weights_bytes(unfused),
        "weights_bytes_fused": weights_bytes(fused),
        "checkpoint_bytes": ckpt.stat().st_size,
        "safetensors_bytes": weights.stat().st_size,
        "onnx_bytes": onnx.stat().st_size,
    }


def bundle_metadata(
    measured: dict,
    how: str,
    agreement: dict | None = None,
    at_eval: dict | None = None,
    executorch: dict | None = None,
    coreml: dict | None = None,
    int8: dict | None = None,
) -> dict:
    """metadata.json of a bundle, whole: what measured_metadata found (once per export), how it was made, what each
    optional part adds when it was made (the detector's parity, the parity at the run's evaluation precision, the
    ExecuTorch and Core ML files, the int8 model), and the table of its files. The one place the metadata is
    assembled: `kvasir export` gathers the parts and calls this."""
    optional = {
        "uncertainty_parity": agreement,
        "parity_at_eval_precision": at_eval,
        "executorch": executorch,
        "coreml": coreml,
        "int8": int8,
    }
    metadata = measured | {"how": how}
    metadata |= {k: v for k, v in optional.items() if v is not None}
    if int8:
        metadata["precision"] = "int8"
    return metadata | {"files": bundle_files(metadata)}


def recipe_record(trained: TrainedRun) -> dict:
    """How the model was trained beyond the optimizer (the recipe's ingredients), and its teacher and unlabeled
    frames as the run recorded them (model_info.json: name, source, SHA-256; frames found, used, left out)."""
    model, data = trained.config.get("model", {}), trained.config.get("data", {})
    record = {k: model.get(k) for k in ("ema", "mixup", "cutmix", "drop_path", "label_smoothing") if model.get(k)}
    if data.get("augment", "standard") != "standard":
        record["augment"] = data["augment"]
    info_path = trained.home.model_info
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    if model.get("teacher"):
        record["teacher"] = info.get("teacher") or {"source": model["teacher"]}
        record["distill_weight"], record["distill_temperature"] = model["distill_weight"], model["distill_temperature"]
    if info.get("unlabeled"):
        record["unlabeled"] = info["unlabeled"]
    return record


def measured_metadata(
    trained: TrainedRun, checks: dict, images: int, tolerance: float, sizes: dict, latency: float, test_metrics
) -> dict:
    """The model, its input as in training, its output, its checks and provenance (the checkpoint hashed once)."""
    return {
        "model_name": trained.module.model_config.name,
        "architecture": "timm model reparameterized with timm.utils.model.reparameterize_model",
        "class_names": trained.module.class_names,
        # the network's input as in training (images.ModelInput.to_dict), and the tensor the model files take
        "input": trained.model_input.to_dict()
        | {
            "name": INPUT_NAME,
            "shape": ["batch", 3, trained.model_input.image_size, trained.model_input.image_size],
            "dtype": "float32",
            "layout": "NCHW, RGB, scaled to [0, 1] then normalized with mean/std",
            "field_of_view_png": FIELD_OF_VIEW_NAME if trained.model_input.field_of_view else None,
        },
        "output": {"name": OUTPUT_NAME, "meaning": "logits in class_names order; softmax gives probabilities"},
        "features_output": {
            "name": FEATURES_OUTPUT,
            "meaning": "pooled pre-logits features: the out-of-distribution detector's input (uncertainty)",
        },
        # the detector, its threshold, abstention and the conformal quantile (answers.Uncertainty; arrays in
        # uncertainty.npz); None when the checkpoint has none (`kvasir test RUN` fits it)
        "uncertainty": trained.module.uncertainty.plain() if trained.module.uncertainty else None,
        # fitted on val by `kvasir test --calibrate true`: softmax(logits / temperature) is better calibrated
        "temperature": trained.temperature,
        "test_metrics": _headline(test_metrics) if test_metrics else None,
        "audit": trained.home.audit.summary(file_sha256(trained.ckpt)),
        "parity": checks | {"images": images, "tolerance_rel": tolerance},
        "sizes": sizes,
        "onnxruntime_ms_batch1": latency,
        "versions": library_versions(),
        "source_checkpoint": str(trained.ckpt.resolve()),
        "recipe": recipe_record(trained),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "intended_use": "Research on GI endoscopy image classification. Not a medical device.",
        "precision": "fp32",
    }


def bundle_files(metadata: dict) -> list[dict]:
    """What each model file of a bundle is, what runs it, what it takes and how it was checked
    (metadata.json["files"], the card's table)."""
    size = ModelInput.from_dict(metadata["input"]).image_size
    parity_checks = metadata["parity"]
    n = parity_checks["images"]

    def tensor(batch: str = "batch") -> str:
        return f"{INPUT_NAME}: float32 [{batch}, 3, {size}, {size}], preprocessed as `input` says (outside the model)"

    def int8_check(int8: dict) -> str:
        return f"int8 {int8['verdict']} on {int8['images']} test images (accuracy change interval, McNemar)"

    parity_note = f"parity with the trained model on {n} images"
    files = [
        {
            "file": ONNX_NAME,
            "precision": "fp32",
            "runtime": "onnxruntime",
            "input": tensor(),
            "checked": parity_note,
        },
        {
            "file": WEIGHTS_NAME,
            "precision": "fp32",
            "runtime": "timm + PyTorch (fused model)",
            "input": tensor(),
            "checked": parity_note,
        },
    ]
    if metadata.get("int8"):
        int8 = metadata["int8"]
        files.append(
            {"file": int8["file"], "precision": "int8", "runtime": "onnxruntime", "input": tensor()}
            | {"checked": int8_check(int8)}
        )
    executorch = metadata.get("executorch")
    if executorch:
        pte = {"runtime": executorch["runtime"], "input": tensor(f"batch 1 to {executorch['max_batch']}")}
        checked = f"{parity_note}, in ExecuTorch's runtime" if "fused_torch_vs_executorch" in parity_checks else ""
        files.append({"file": executorch["file"], "precision": "fp32"} | pte | {"checked": checked})
        if executorch.get("int8"):
            int8 = executorch["int8"]
            files.append({"file": int8["file"], "precision": "int8"} | pte | {"checked": int8_check(int8)})
    if metadata.get("coreml"):
        coreml = metadata["coreml"]
        files.append({k: coreml[k] for k in ("file", "runtime", "input", "checked")} | {"precision": "fp32"})
    return files


def _headline(metrics: dict) -> dict:
    keys = ("n", "accuracy", "accuracy_ci", "top3", "top5", "f1_macro", "f1_macro_ci", "f1_micro", "mcc")
    keys += ("confusion_matrix",)  # the page draws it
    return {k: metrics.get(k) for k in keys}
