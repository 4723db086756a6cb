"""`kvasir export`: fuse, check parity, write the bundle (ONNX, safetensors, metadata, model card, int8)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from kvasir_mobileone.data.field_of_view import write_view_png
from kvasir_mobileone.deploy.card import write_card
from kvasir_mobileone.deploy.export import (
    FORMATS,
    LogitsAndFeatures,
    bundle_metadata,
    bundle_sizes,
    fused_onnx,
    measured_metadata,
    onnx_logits,
    parity,
    parity_images,
    require_parity,
    save_weights,
)
from kvasir_mobileone.deploy.latency import latency_ms
from kvasir_mobileone.deploy.quantize import (
    CONFIGS,
    DEFAULT_CONFIG,
    DEFAULT_FP32_LAYERS,
    Int8Images,
    Int8Refused,
    int8_for_run,
    session,
    session_logits,
)
from kvasir_mobileone.errors import UserError
from kvasir_mobileone.images import ModelInput
from kvasir_mobileone.io import atomic_path, markdown_table, update_json, write_json
from kvasir_mobileone.models.loading import open_run
from kvasir_mobileone.runs import (
    CARD_NAME,
    CONFIG_NAME,
    COREML_NAME,
    FIELD_OF_VIEW_NAME,
    INT8_NAME,
    METADATA_NAME,
    ONNX_NAME,
    UNCERTAINTY_NAME,
    UNFUSED_NAME,
    WEIGHTS_NAME,
)


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
    int8_search: bool = False,
    force: bool = False,
    format: str = "onnx",
) -> Path:
    """Fuse a trained model and write a parity-checked deployment bundle (ONNX, int8, ExecuTorch, Core ML).

    Fuse RUN_OR_CKPT's model and write OUT/{model.onnx, model.safetensors, metadata.json}; check parity on real
    images (the run's test split, or --images DIR; --data_dir when the run's data folder has moved).

    --quantize int8 adds model.int8.onnx: calibrated on --calibration_images training images, checked on the run's
    test images, refused only when they show a loss (the paired 95% interval of the accuracy change lies below
    -max_accuracy_drop, or McNemar finds more fp32-only-right images; --force writes it anyway), "certified" when a
    loss beyond --max_accuracy_drop is ruled out, "not certified" (written) when the test set is too small to say.
    --int8_search true measures every calibration ({minmax, minmax-per-channel, percentile-per-channel,
    entropy-per-channel}) and keeps the best.

    --format executorch (or coreml, or executorch,coreml) adds on-device files beside the ONNX model:
    model.pte (ExecuTorch, XNNPACK; with --quantize int8 also model.int8.pte, calibrated, checked and accepted by
    the same rule as the ONNX int8) and model.mlpackage (Core ML, preprocessing inside; converted here, run on a
    Mac). They need the optional extra 'mobile'."""
    formats = asked_formats(format, quantize, int8_config)
    trained = open_run(run, data_dir)
    ckpt, module, model_input = trained.ckpt, trained.module, trained.model_input
    if "coreml" in formats and model_input.clean:
        raise UserError(
            "--format coreml puts the preprocessing inside the graph, and this model's clean-up (--data.clean_frame "
            "inpaint: OpenCV's inpainting of the frame and overlay marks) cannot be: export onnx or executorch, whose "
            "apps run the clean-up themselves (the model card says how)."
        )
    paths = parity_images(trained, images, num_images)
    batch = torch.from_numpy(np.stack([model_input.read(p)[0] for p in paths]))

    out_dir = Path(out)
    unfused = module.backbone.float().eval()
    fused, checks = fused_onnx(unfused, batch, out_dir / ONNX_NAME, opset)
    if "executorch" in formats:
        pte = executorch_fp32(fused, batch, out_dir, checks)
    agreement = uncertainty_files(module, fused, batch, out_dir)
    print_parity(checks, len(paths))
    require_parity(checks, tolerance, out_dir)
    at_eval = eval_precision_parity(trained, unfused, batch, out_dir)
    save_weights(fused, out_dir / WEIGHTS_NAME)
    sizes, latency = sizes_and_latency(unfused, fused, ckpt, out_dir, model_input.image_size)
    if trained.run:  # what `kvasir compare` shows beside the run's metrics
        update_json(
            trained.run.model_info, sizes | {"onnxruntime_ms_batch1": latency, "bundle": str(out_dir.resolve())}
        )
    metrics_path = trained.run.test.metrics if trained.run else None
    test_metrics = json.loads(metrics_path.read_text()) if metrics_path and metrics_path.is_file() else None
    listed = ",".join(f for f in FORMATS if f in formats)
    parts = {
        "how": f"kvasir export {run} --out {out} --format {listed} (eval mode, fp32, ONNX opset {opset})",
        "agreement": agreement,
        "at_eval": at_eval,
        "executorch": pte if "executorch" in formats else None,
    }
    measured = measured_metadata(trained, checks, len(paths), tolerance, sizes, latency, test_metrics)
    if "coreml" in formats:
        parts["coreml"] = coreml(fused, bundle_metadata(measured, **parts), paths, batch, out_dir)
    # the model card, timm's config.json and the training-time weights: a folder the hub and timm understand
    save_weights(unfused, out_dir / UNFUSED_NAME)
    if model_input.field_of_view:  # the mask the model was trained with, as a picture beside the bits in metadata.json
        write_view_png(out_dir / FIELD_OF_VIEW_NAME, model_input.visible())
    # the fp32 bundle is complete before int8 is tried: a refusal leaves a usable bundle, card included
    metadata = write_metadata(out_dir, bundle_metadata(measured, **parts), test_metrics, trained, unfused)
    if quantize == "int8":
        settings = (int8_config, fp32_layers, calibration_images, max_accuracy_drop, force, int8_search)
        int8, pte_int8, refused = quantize_all(trained, fused, out_dir, formats, *settings)
        parts["int8"] = int8
        if pte_int8:
            parts["executorch"] = parts["executorch"] | {"int8": pte_int8}
        metadata = write_metadata(out_dir, bundle_metadata(measured, **parts), test_metrics, trained, unfused)
        if refused:
            raise refused[0]
    written = [ONNX_NAME, WEIGHTS_NAME, METADATA_NAME, CARD_NAME, CONFIG_NAME, UNFUSED_NAME]
    written += [f["file"] for f in metadata["files"] if f["file"] not in written]
    print(f"Bundle written to {out_dir}/ ({', '.join(written)})")
    return out_dir


def asked_formats(format: str, quantize: str, int8_config: str) -> set[str]:
    """--format's formats (ONNX always), checked with --int8_config: a UserError names a wrong one."""
    if quantize == "int8" and int8_config not in CONFIGS:
        raise UserError(f"--int8_config {int8_config!r}: use one of {', '.join(CONFIGS)}.")
    formats = {f.strip() for f in format.split(",") if f.strip()} | {"onnx"}
    if formats - set(FORMATS):
        raise UserError(f"--format {format!r}: use one or more of {', '.join(FORMATS)}, separated by commas.")
    return formats


def write_metadata(out_dir: Path, metadata: dict, test_metrics, trained, unfused) -> dict:
    """metadata.json and the model card that reads it, written together."""
    write_json(out_dir / METADATA_NAME, metadata)
    write_card(out_dir, metadata, test_metrics, trained.config, unfused)
    return metadata


def print_parity(checks: dict, images: int) -> None:
    rows = [
        [name, f"{c['max_abs']:.2e}", f"{c['max_rel']:.2e}", f"{100 * c['top1_agreement']:.1f}%"]
        for name, c in checks.items()
    ]
    print(f"Parity on {images} real images:")
    print(markdown_table(["check", "max abs diff", "max rel diff", "top-1 agreement"], rows))


def eval_precision_parity(trained, unfused, batch: torch.Tensor, out_dir: Path) -> dict | None:
    """A run evaluated at its training precision: how far the fp32 ONNX model is from it (None for a run
    evaluated in fp32, the default)."""
    if trained.precision == "32-true":
        return None
    with trained.evaluating():
        at_eval = unfused(batch).float().numpy()
    checks = parity(at_eval, onnx_logits(out_dir / ONNX_NAME, batch.numpy()))
    print(
        f"The run evaluates at {trained.precision}; the fp32 ONNX model against it: top-1 agreement "
        f"{100 * checks['top1_agreement']:.1f}%, max rel diff {checks['max_rel']:.2e}"
    )
    return checks | {"precision": trained.precision}


def sizes_and_latency(unfused, fused, ckpt: Path, out_dir: Path, image_size: int) -> tuple[dict, float]:
    """(parameters and weight sizes, unfused and fused; onnxruntime's batch-1 latency on this machine), printed."""
    sizes = bundle_sizes(unfused, fused, ckpt, out_dir / WEIGHTS_NAME, out_dir / ONNX_NAME)
    print(
        markdown_table(
            ["", "parameters", "fp32 weights (MB)"],
            [
                ["unfused (training)", f"{sizes['parameters_unfused']:,}", sizes["weights_bytes_unfused"] / 1e6],
                ["fused (deploy)", f"{sizes['parameters_fused']:,}", sizes["weights_bytes_fused"] / 1e6],
            ],
        )
    )
    latency = latency_ms(session_logits(session(out_dir / ONNX_NAME)), (1, 3, image_size, image_size), repeats=30)
    print(f"onnxruntime, batch 1, {image_size} px: {latency:.2f} ms per image (median of 30, this machine)")
    return sizes, latency


def uncertainty_files(module, fused: torch.nn.Module, batch: torch.Tensor, out_dir: Path) -> dict | None:
    """uncertainty.npz beside the model, and how the bundle's answers agree with the checkpoint's on the parity
    images (the ONNX graph's features against the trained model's); None when the checkpoint has no detector."""
    found = module.uncertainty
    if found is None:
        print("No out-of-distribution detector in this checkpoint: `kvasir test RUN` fits one; export again after.")
        return None
    with atomic_path(out_dir / UNCERTAINTY_NAME) as tmp, tmp.open("wb") as f:
        np.savez(f, **found.arrays)
    with torch.no_grad():
        logits, features = (t.numpy() for t in module.logits_and_features(batch))
    names = module.class_names
    reference = found.judge(logits, features, names)
    sess = session(out_dir / ONNX_NAME)
    onnx_out = found.judge(*sess.run(None, {sess.get_inputs()[0].name: batch.numpy()}), names)
    same = [
        a["answer"] == b["answer"] and a["prediction_set"] == b["prediction_set"]
        for a, b in zip(reference, onnx_out, strict=True)
    ]
    agreement = {"images": len(same), "answers_agree": float(np.mean(same))}
    if found.ood_scores(logits, features) is not None:
        diff = np.abs(np.array([a["ood_score"] for a in reference]) - np.array([b["ood_score"] for b in onnx_out]))
        agreement["max_ood_score_diff"] = float(diff.max())
    print(
        f"Uncertainty ({found.detector}): the ONNX model's answers agree with the checkpoint's on "
        f"{100 * agreement['answers_agree']:.1f}% of {len(same)} images."
    )
    return agreement


def executorch_fp32(fused: torch.nn.Module, batch: torch.Tensor, out_dir: Path, checks: dict) -> dict:
    """model.pte beside the ONNX model; its parity with the fused model joins `checks` (the same tolerance)."""
    from kvasir_mobileone.deploy import pte

    print("ExecuTorch: export and lowering to XNNPACK (a minute on a small CPU) ...")
    pte.export_pte(LogitsAndFeatures(fused), batch, out_dir / pte.PTE_NAME)
    program = pte.PteModel(out_dir / pte.PTE_NAME)
    with torch.no_grad():
        checks["fused_torch_vs_executorch"] = parity(fused(batch).numpy(), program.logits(batch.numpy()))
    ms = latency_ms(program.logits, (1, *batch.shape[1:]), repeats=30)
    print(f"ExecuTorch (XNNPACK), batch 1: {ms:.2f} ms per image (median of 30, this machine)")
    return {
        "file": pte.PTE_NAME,
        "runtime": "ExecuTorch, XNNPACK delegate",
        "batch": f"dynamic, 1 to {program.max_batch}",
        "max_batch": program.max_batch,
        "ms_batch1": ms,
    }


def coreml(fused: torch.nn.Module, metadata: dict, paths: list[Path], batch: torch.Tensor, out_dir: Path) -> dict:
    """model.mlpackage, its in-graph preprocessing checked in PyTorch against predict's answer on the parity
    images; the Core ML runtime itself is not checked here (Linux)."""
    from kvasir_mobileone.deploy import coreml as cm
    from kvasir_mobileone.evaluation.stats import apply_temperature, softmax

    model_input = ModelInput.from_dict(metadata["input"])
    print("Core ML: conversion to an ML program (preprocessing inside) ...")
    cm.export_coreml(fused, metadata, out_dir / COREML_NAME)
    raw = np.stack([model_input.decode_raw(p) for p in paths])
    reference = softmax(onnx_logits(out_dir / ONNX_NAME, batch.numpy()))  # predict's answer, from the ONNX model
    if metadata.get("temperature"):
        reference = apply_temperature(reference, metadata["temperature"])
    figures = cm.preprocessing_parity(fused, metadata, raw, reference)
    print(
        f"Core ML graph's preprocessing (in PyTorch) against predict on {len(paths)} images: top-1 agreement "
        f"{100 * figures['top1_agreement']:.1f}%, max probability diff {figures['max_abs']:.2e}. The .mlpackage "
        f"itself is not run here (macOS only): {cm.CHECK_ON_MAC}"
    )
    if figures["top1_agreement"] < 1.0 or figures["max_abs"] > 1e-3:
        raise UserError(f"The Core ML graph's preprocessing disagrees with predict: {figures}. Do not ship it.")
    return {
        "file": COREML_NAME,
        "runtime": "Core ML (iOS 16 / macOS 13 or later), ML program, fp32",
        "input": f"image: RGB frame, {model_input.image_size} x {model_input.image_size}, whole frame "
        "(Vision imageCropAndScaleOption .scaleFill)",
        "output": "classLabel and classLabel_probs (softmax with the temperature)",
        "preprocessing_parity": figures | {"images": len(paths)},
        "checked": "not checked here: the Core ML runtime needs macOS",
        "check_on_mac": cm.CHECK_ON_MAC,
    }


def quantize_all(
    trained, fused, out_dir, formats, config, fp32_layers, calibration_images, max_drop, force, search
) -> tuple[dict | None, dict | None, list[Int8Refused]]:
    """The int8 models of every format asked for, on the same calibration and test images and by the same rule:
    (the ONNX int8 figures, the ExecuTorch int8 figures — None for a refused or unasked one —, the refusals; the
    others are still built)."""
    images = Int8Images(trained, calibration_images)
    refused, onnx_int8, pte_int8 = [], None, None
    try:
        figures = int8_for_run(
            images, out_dir / ONNX_NAME, out_dir / INT8_NAME, config, fp32_layers, max_drop, force, search
        )
        print(figures.pop("summary"))
        onnx_int8 = {"file": INT8_NAME} | figures
    except Int8Refused as err:
        refused.append(err)
    if "executorch" in formats:
        from kvasir_mobileone.deploy.pte import pte_int8_for_run

        try:
            pte_int8 = pte_int8_for_run(LogitsAndFeatures(fused), images, out_dir, max_drop, force)
            print("ExecuTorch " + pte_int8.pop("summary"))
        except Int8Refused as err:
            refused.append(err)
    return onnx_int8, pte_int8, refused
