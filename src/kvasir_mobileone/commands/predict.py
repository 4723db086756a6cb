"""`kvasir predict`: classes (and heatmaps) for image files, folders and globs; torch-free on a bundle."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from tqdm import tqdm

from kvasir_mobileone.answers import NOT_SURE
from kvasir_mobileone.data.folder import expand_inputs
from kvasir_mobileone.deploy.predict import classify, top_classes, write_predictions
from kvasir_mobileone.deploy.runtime import load_predictor
from kvasir_mobileone.extras import require


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
    precision: Literal["auto", "fp32", "int8"] = "auto",
    runtime: Literal["onnxruntime", "executorch", "coreml"] = "onnxruntime",
) -> list[dict]:
    """Classify images with a bundle (onnxruntime) or a run/checkpoint (PyTorch); unreadable files are listed.

    Probabilities use the model's fitted temperature when it has one; --tta true averages in the flipped image.
    A bundle with an int8 model runs it unless --precision fp32. --runtime executorch runs the bundle's .pte
    programs in ExecuTorch's runtime (this imports torch); --runtime coreml its .mlpackage (macOS only)."""
    if explain:
        require("pytorch_grad_cam", "explain")
    predictor = load_predictor(model, precision, runtime)
    meta = predictor.metadata
    class_names = meta["class_names"]
    paths = expand_inputs(inputs)
    top_k = min(top_k, len(class_names))
    results: list[dict] = []
    for start in tqdm(range(0, len(paths), batch_size), desc="predict", unit="batch"):
        arrays, good = [], []
        for path in paths[start : start + batch_size]:
            try:
                arrays.append(predictor.model_input.read(path)[0])
                good.append(path)
            except Exception as err:  # any unreadable file is reported, never fatal
                results.append({"path": str(path), "error": f"{type(err).__name__}: {err}"})
        if not good:
            continue
        probs, judged = classify(predictor, np.stack(arrays), tta)
        results += [
            {"path": str(path), "error": ""} | j | top_classes(p, class_names, top_k)
            for path, p, j in zip(good, probs, judged, strict=True)
        ]
    results.sort(key=lambda r: r["path"])
    _print_table(results, top_k)
    if out:
        write_predictions(Path(out), results, top_k, output_format)
    if explain:  # torch, only when asked for
        from kvasir_mobileone.deploy.explain import explain_images

        written = explain_images([Path(r["path"]) for r in results if not r["error"]], model, Path(explain_dir))
        print(f"{len(written)} Grad-CAM images written to {explain_dir}/")
    return results


def _print_table(results: list[dict], top_k: int, limit: int = 20) -> None:
    bad = [r for r in results if r["error"]]
    for r in [r for r in results if not r["error"]][:limit]:
        guesses = ", ".join(f"{r[f'top{i + 1}']} {r[f'p{i + 1}']:.3f}" for i in range(top_k))
        answer = r["answer"] if r["answer"] != r["top1"] else ""
        extra = f"  [{answer}]" if answer else ""
        extra += f"  set: {r['prediction_set']}" if r.get("prediction_set") else ""
        print(f"{r['path']:<60}  {guesses}{extra}")
    if len(results) - len(bad) > limit:
        print(f"... {len(results) - len(bad) - limit} more")
    for r in bad:
        print(f"UNREADABLE {r['path']}: {r['error']}")
    outside = sum(1 for r in results if r.get("outside") is True)
    unsure = sum(1 for r in results if r.get("answer") == NOT_SURE)
    print(
        f"{len(results) - len(bad)} images classified, {len(bad)} unreadable"
        + (
            f"; {outside} outside the training data, {unsure} not sure"
            if any(r.get("prediction_set") for r in results)
            else ""
        )
        + "."
    )
