"""`kvasir predict`: top-k classes for image files, folders or globs, from a checkpoint or an exported bundle.

With a bundle (a folder holding model.onnx and metadata.json) this module runs on onnxruntime, numpy and Pillow
alone: Lightning, timm and torch are imported only for checkpoints and for --explain.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kvasir_mobileone.evaluation.stats import apply_temperature, softmax
from kvasir_mobileone.io import write_csv, write_json


def probabilities(predictor, batch: np.ndarray, tta: bool = False, logits: np.ndarray | None = None) -> np.ndarray:
    """Class probabilities of a batch of network inputs: softmax, flip TTA when asked, then the model's temperature
    (as `kvasir test` does: views averaged first). `logits`: the batch's, when already computed."""
    probs = softmax(predictor.logits(batch) if logits is None else logits)
    if tta:
        probs = (probs + softmax(predictor.logits(np.ascontiguousarray(batch[..., ::-1])))) / 2
    return apply_temperature(probs, predictor.temperature) if predictor.temperature else probs


# what each image's row says besides its top classes (answers.Uncertainty.judge); "" where the model has no detector
JUDGEMENT = ("answer", "prediction_set", "outside", "ood_score", "not_sure")


def classify(predictor, batch: np.ndarray, tta: bool = False) -> tuple[np.ndarray, list[dict]]:
    """(probabilities as `probabilities` gives them, each image's judgement: the answer — its class, "not sure" or
    "outside the training data" —, prediction set, out-of-distribution flag and score). `predict` and `serve` both
    answer through this function. Without a detector (an older bundle, Core ML) the answer is the top class and the
    rest is empty."""
    logits, features = predictor.outputs(batch)
    probs = probabilities(predictor, batch, tta, logits)
    names = predictor.class_names
    found = predictor.uncertainty
    if found is None:
        return probs, [dict.fromkeys(JUDGEMENT, "") | {"answer": names[int(p.argmax())]} for p in probs]
    judged = found.judge(logits, features, names)
    for j in judged:
        if j["outside"] is None:  # the detector needs features this runtime does not give
            j["outside"], j["ood_score"] = "", ""
    return probs, judged


def top_classes(probs: np.ndarray, class_names: list[str], top_k: int) -> dict:
    """{top1: name, p1: probability, ...} for one image."""
    order = np.argsort(-probs, kind="stable")[:top_k]  # ties go to the first class, as argmax (evaluation) does
    return {f"top{i + 1}": class_names[j] for i, j in enumerate(order)} | {
        f"p{i + 1}": round(float(probs[j]), 6) for i, j in enumerate(order)
    }


def write_predictions(out: Path, results: list[dict], top_k: int, output_format: str | None = None) -> Path:
    if (output_format or out.suffix.lstrip(".")) == "json":
        return write_json(out, results)
    header = ["path", "answer", *[k for i in range(top_k) for k in (f"top{i + 1}", f"p{i + 1}")]]
    header += [k for k in JUDGEMENT if k != "answer"] + ["error"]
    return write_csv(out, header, [[r.get(k, "") for k in header] for r in results])
