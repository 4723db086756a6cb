"""`kvasir export`: reparameterize a copy of the model, write ONNX + safetensors + metadata, check parity."""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.metadata
import json
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from safetensors.torch import save_file

from kvasir_mobileone.data.folder import expand_inputs
from kvasir_mobileone.deploy.card import CARD_NAME, CONFIG_NAME, UNFUSED_NAME, write_card
from kvasir_mobileone.deploy.quantize import (
    CONFIGS,
    DEFAULT_CONFIG,
    DEFAULT_FP32_LAYERS,
    int8_for_run,
    latency_ms,
    session,
)
from kvasir_mobileone.deploy.runtime import INT8_NAME, METADATA_NAME, ONNX_NAME, WEIGHTS_NAME
from kvasir_mobileone.errors import UserError
from kvasir_mobileone.images import read_network_input
from kvasir_mobileone.io import atomic_path, markdown_table, update_json, write_json
from kvasir_mobileone.models.backbone import fuse, parameter_count
from kvasir_mobileone.models.loading import TrainedRun, open_run

INPUT_NAME, OUTPUT_NAME = "image", "logits"
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
    """ONNX with a dynamic batch axis, written whole or not at all."""
    with atomic_path(path) as tmp:
        torch.onnx.export(
            model,
            (example,),
            str(tmp),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
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


def export(
    run: str,
    out: str = "bundle",
    images: str | None = None,
    num_images: int = 32,
    opset: int = 17,
    tolerance: float = 1e-3,
    data_dir: str | None = None,
    quantize: Literal["none", "int8"] = "none",
    int8_config: str = DEFAULT_CONFIG,
    fp32_layers: int = DEFAULT_FP32_LAYERS,
    calibration_images: int = 256,
    max_accuracy_drop: float = 0.01,
    min_agreement: float = 0.98,
    int8_search: bool = False,
    force: bool = False,
) -> Path:
    """Fuse RUN_OR_CKPT's model and write OUT/{model.onnx, model.safetensors, metadata.json}; check parity on real
    images (the run's test split, or --images DIR; --data_dir when the run's data folder has moved).

    --quantize int8 adds model.int8.onnx: calibrated on --calibration_images training images, checked on the run's
    test images, refused when it loses more than --max_accuracy_drop accuracy or agrees with fp32 on fewer than
    --min_agreement of them (--force writes it anyway). --int8_search true measures every calibration
    ({minmax, minmax-per-channel, percentile-per-channel, entropy-per-channel}) and keeps the best."""
    if quantize == "int8" and int8_config not in CONFIGS:
        raise UserError(f"--int8_config {int8_config!r}: use one of {', '.join(CONFIGS)}.")
    trained = open_run(run, data_dir)
    ckpt, module, norm = trained.ckpt, trained.module, trained.norm
    paths = parity_images(trained, images, num_images)
    batch = torch.from_numpy(np.stack([read_network_input(p, norm.to_dict())[0] for p in paths]))

    # Fuse in eval mode and fp32, on a copy: the checkpoint's training-time model stays as it is.
    unfused = module.backbone.float().eval()
    fused = fuse(unfused)
    with torch.no_grad():
        reference = unfused(batch).numpy()
        fused_logits = fused(batch).numpy()
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    export_onnx(fused, batch[:1], out_dir / ONNX_NAME, opset)
    runtime_logits = onnx_logits(out_dir / ONNX_NAME, batch.numpy())
    checks = {
        "unfused_vs_fused_torch": parity(reference, fused_logits),
        "fused_torch_vs_onnxruntime": parity(fused_logits, runtime_logits),
    }
    rows = [
        [name, f"{c['max_abs']:.2e}", f"{c['max_rel']:.2e}", f"{100 * c['top1_agreement']:.1f}%"]
        for name, c in checks.items()
    ]
    print(f"Parity on {len(paths)} real images:")
    print(markdown_table(["check", "max abs diff", "max rel diff", "top-1 agreement"], rows))
    failed = [n for n, c in checks.items() if c["max_rel"] > tolerance or c["top1_agreement"] < 1.0]
    if failed:
        raise ParityError(
            f"Parity failed for {', '.join(failed)} (tolerance {tolerance} relative, 100% top-1): {checks}. "
            f"The bundle in {out_dir} must not be used; check that the checkpoint was trained (random-init "
            "BatchNorm statistics make activations explode) and report the versions in use."
        )

    with atomic_path(out_dir / WEIGHTS_NAME) as tmp:
        save_file({k: v.contiguous() for k, v in fused.state_dict().items()}, str(tmp))
    sizes = {
        "parameters_unfused": parameter_count(unfused),
        "parameters_fused": parameter_count(fused),
        "weights_bytes_unfused": weights_bytes(unfused),
        "weights_bytes_fused": weights_bytes(fused),
        "checkpoint_bytes": ckpt.stat().st_size,
        "safetensors_bytes": (out_dir / WEIGHTS_NAME).stat().st_size,
        "onnx_bytes": (out_dir / ONNX_NAME).stat().st_size,
    }
    print(
        markdown_table(
            ["", "parameters", "fp32 weights (MB)"],
            [
                ["unfused (training)", f"{sizes['parameters_unfused']:,}", sizes["weights_bytes_unfused"] / 1e6],
                ["fused (deploy)", f"{sizes['parameters_fused']:,}", sizes["weights_bytes_fused"] / 1e6],
            ],
        )
    )
    latency = latency_ms(session(out_dir / ONNX_NAME), (1, 3, norm.image_size, norm.image_size), repeats=30)
    print(f"onnxruntime, batch 1, {norm.image_size} px: {latency:.2f} ms per image (median of 30, this machine)")
    if trained.run:  # what `kvasir compare` shows beside the run's metrics
        update_json(
            trained.run.model_info, sizes | {"onnxruntime_ms_batch1": latency, "bundle": str(out_dir.resolve())}
        )
    metrics_path = trained.run.test_dir / "metrics.json" if trained.run else None
    test_metrics = json.loads(metrics_path.read_text()) if metrics_path and metrics_path.is_file() else None
    metadata = {
        "model_name": module.cfg.name,
        "architecture": "timm model reparameterized with timm.utils.model.reparameterize_model",
        "class_names": module.class_names,
        "input": {
            "name": INPUT_NAME,
            "shape": ["batch", 3, norm.image_size, norm.image_size],
            "dtype": "float32",
            "layout": "NCHW, RGB, scaled to [0, 1] then normalized with mean/std",
            "image_size": norm.image_size,
            "mean": list(norm.mean),
            "std": list(norm.std),
            "interpolation": norm.interpolation,
            # relative (x0, y0, x1, y1) boxes set to black before scaling; the model never saw them
            "mask": [list(b) for b in norm.mask],
            "mask_regions": module.hparams.get("mask_regions"),
        },
        "output": {"name": OUTPUT_NAME, "meaning": "logits in class_names order; softmax gives probabilities"},
        # fitted on val by `kvasir test --calibrate true`: softmax(logits / temperature) is better calibrated
        "temperature": trained.temperature,
        "test_metrics": _headline(test_metrics) if test_metrics else None,
        "parity": checks | {"images": len(paths), "tolerance_rel": tolerance},
        "sizes": sizes,
        "onnxruntime_ms_batch1": latency,
        "versions": library_versions(),
        "source_checkpoint": str(ckpt.resolve()),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "how": f"kvasir export {run} --out {out} (eval mode, fp32, ONNX opset {opset})",
        "intended_use": "Research on GI endoscopy image classification. Not a medical device.",
        "precision": "fp32",
    }
    # the model card, timm's config.json and the training-time weights: a folder the hub and timm understand
    with atomic_path(out_dir / UNFUSED_NAME) as tmp:
        save_file({k: v.contiguous() for k, v in unfused.state_dict().items()}, str(tmp))
    # the fp32 bundle is complete before int8 is tried: a refusal leaves a usable bundle, card included
    write_json(out_dir / METADATA_NAME, metadata)
    write_card(out_dir, metadata, test_metrics, trained.config, unfused.num_features)
    if quantize == "int8":
        metadata["int8"] = {"file": INT8_NAME} | int8_for_run(
            trained, out_dir / ONNX_NAME, out_dir / INT8_NAME, int8_config, fp32_layers, calibration_images,
            max_accuracy_drop, min_agreement, force, int8_search)  # fmt: skip
        metadata["precision"] = "int8"
        write_json(out_dir / METADATA_NAME, metadata)
        write_card(out_dir, metadata, test_metrics, trained.config, unfused.num_features)
    print(f"Bundle written to {out_dir}/ ({ONNX_NAME}, {WEIGHTS_NAME}, {METADATA_NAME}, {CARD_NAME}, {CONFIG_NAME}, "
          f"{UNFUSED_NAME}{', ' + INT8_NAME if quantize == 'int8' else ''})")  # fmt: skip
    return out_dir


def _headline(metrics: dict) -> dict:
    keys = ("n", "accuracy", "accuracy_ci", "top3", "top5", "f1_macro", "f1_macro_ci", "f1_micro", "mcc")
    return {k: metrics.get(k) for k in keys}
