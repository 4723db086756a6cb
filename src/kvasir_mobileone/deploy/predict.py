"""`kvasir predict`: top-k classes for image files, folders or globs, from a checkpoint or an exported bundle.

With a bundle (a folder holding model.onnx and metadata.json) this module runs on onnxruntime, numpy and Pillow
alone: Lightning, timm and torch are imported only for checkpoints and for --explain.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
from tqdm import tqdm

from kvasir_mobileone.answers import OUTSIDE
from kvasir_mobileone.evaluation.stats import apply_temperature, softmax
from kvasir_mobileone.io import write_csv, write_json


def probabilities(predictor, batch: np.ndarray, tta: bool = False, logits: np.ndarray | None = None) -> np.ndarray:
    """Class probabilities of a batch of network inputs: softmax, flip TTA when asked, then the model's temperature
    (as `kvasir test` does: views averaged first). `logits`: the batch's, when already computed."""
    probs = softmax(predictor.logits(batch) if logits is None else logits)
    if tta:
        probs = (probs + softmax(predictor.logits(np.ascontiguousarray(batch[..., ::-1])))) / 2
    return apply_temperature(probs, predictor.temperature) if predictor.temperature else probs


@dataclass(frozen=True)
class Prediction:
    """One input's row of `kvasir predict`: the one schema of its CSV (answers.csv) and JSON outputs, of the page's
    table (the fields with a "page" title) and of the judgement columns the video's frames.csv shares (JUDGEMENT). A
    field added here reaches all of them. None (empty in the CSV) where the model has no detector, or the file could
    not be read."""

    path: str
    answer: str = field(default="", metadata={"page": "answer"})  # its class, "not sure" or "outside ..."
    prediction_set: str = field(default="", metadata={"page": "prediction set"})
    top: tuple[tuple[str, float], ...] = field(default=(), metadata={"page": "class"})  # top1, p1, top2, p2, ...
    outside: bool | None = None
    ood_score: float | None = None
    input_score: float | None = None  # the input check's (answers.input_statistics' distance), when the model has it
    not_sure: bool | None = None
    no_picture: bool | None = None  # the frame shows no picture (answers.no_picture): outside, whatever the model
    error: str = ""

    @staticmethod
    def columns(top_k: int) -> list[str]:
        """The CSV header (and the JSON keys, in order) for rows with `top_k` top classes."""
        names = [f.name for f in fields(Prediction)]
        at = names.index("top")
        return names[:at] + [k for i in range(top_k) for k in (f"top{i + 1}", f"p{i + 1}")] + names[at + 1 :]

    def row(self) -> dict:
        """The flat row: every field under its own name, `top` as top1, p1, top2, p2, ..."""
        flat = {f.name: getattr(self, f.name) for f in fields(self)}
        ranked = {k: v for i, (c, p) in enumerate(self.top) for k, v in ((f"top{i + 1}", c), (f"p{i + 1}", p))}
        return {k: ranked[k] if k in ranked else flat[k] for k in self.columns(len(self.top))}

    @staticmethod
    def page_columns(top_k: int) -> list[tuple[str, int, str]]:
        """(field, rank, column title) of the page's table: the fields with a "page" title, `top` as one column a
        class (rank 0 the most probable)."""
        titled = [(f.name, f.metadata["page"]) for f in fields(Prediction) if "page" in f.metadata]
        return [
            (k, i, t if k != "top" else "top class" if i == 0 else f"class {i + 1}")
            for k, t in titled
            for i in (range(top_k) if k == "top" else [0])
        ]


# what the answer judges besides the top classes (answers.Uncertainty.judge): the video's frames.csv has them too
JUDGEMENT = ("answer", "prediction_set", "outside", "ood_score", "input_score", "not_sure", "no_picture")


def classify(
    predictor, batch: np.ndarray, paths: list[str], top_k: int, tta: bool = False
) -> tuple[np.ndarray, list[Prediction]]:
    """(class probabilities, each image's Prediction): its top classes by probability (softmax, flip TTA when
    asked, the model's temperature), and its judgement: the answer — its class, "not sure" or "outside the
    training data" —, prediction set, out-of-distribution flag and score. `predict`, `serve` and the video code
    all answer through this function. A frame that shows no picture (answers.no_picture) is outside the training
    data whatever the model says, with a detector or without. Without a detector (an older bundle, Core ML) the
    answer is otherwise the top class and the rest is empty."""
    logits, features = predictor.outputs(batch)
    probs = probabilities(predictor, batch, tta, logits)
    names = predictor.class_names
    found = predictor.uncertainty
    blank = predictor.model_input.no_picture(batch)
    if found is None:
        judged = [{"answer": names[int(p.argmax())]} for p in probs]
    else:
        statistics = predictor.model_input.statistics(batch) if found.input_check else None
        judged = found.judge(logits, features, names, statistics)
    for j, b in zip(judged, blank, strict=True):
        j["no_picture"] = bool(b)
        if b:
            j["answer"], j["outside"] = OUTSIDE, True
    return probs, [
        Prediction(path=str(path), top=top_classes(p, names, top_k), **{k: j[k] for k in JUDGEMENT if k in j})
        for path, p, j in zip(paths, probs, judged, strict=True)
    ]


def predict_images(predictor, paths: list, top_k: int, batch_size: int, tta: bool = False) -> list[Prediction]:
    """A Prediction per image file, sorted by path; an unreadable file gets its row with the error, never a stop."""
    results: list[Prediction] = []
    for start in tqdm(range(0, len(paths), batch_size), desc="predict", unit="batch", disable=not paths):
        arrays, good = [], []
        for path in paths[start : start + batch_size]:
            try:
                arrays.append(predictor.model_input.read(path)[0])
                good.append(path)
            except Exception as err:  # any unreadable file is reported, never fatal
                results.append(Prediction(str(path), error=f"{type(err).__name__}: {err}"))
        if good:
            results += classify(predictor, np.stack(arrays), good, top_k, tta)[1]
    return sorted(results, key=lambda r: r.path)


def top_classes(probs: np.ndarray, class_names: list[str], top_k: int) -> tuple[tuple[str, float], ...]:
    """The `top_k` most probable classes of one image with their probabilities, most probable first."""
    order = np.argsort(-probs, kind="stable")[:top_k]  # ties go to the first class, as argmax (evaluation) does
    return tuple((class_names[j], round(float(probs[j]), 6)) for j in order)


def write_predictions(out: Path, results: list[Prediction], top_k: int, output_format: str | None = None) -> Path:
    rows = [r.row() for r in results]
    if (output_format or out.suffix.lstrip(".")) == "json":
        return write_json(out, rows)
    header = Prediction.columns(top_k)
    return write_csv(out, header, [[r.get(k, "") for k in header] for r in rows])
