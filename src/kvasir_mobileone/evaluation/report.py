"""A test report: metrics.json, per-class tables, confusion matrices, reliability diagram, predictions.csv and
report.md, from predictions and their metrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.metrics import ConfusionMatrixDisplay

from kvasir_mobileone.evaluation.intervals import metric_intervals
from kvasir_mobileone.evaluation.metrics import compute_metrics
from kvasir_mobileone.io import markdown_table, pyplot, save_figure, write_csv, write_json, write_text
from kvasir_mobileone.metrics import METRICS
from kvasir_mobileone.runs import Predictions, TestReport

plt = pyplot()


def evaluate(probs: np.ndarray, targets: np.ndarray, class_names: list[str]) -> dict:
    """Every metric of a test report with its 95% interval (each class's recall with its Wilson interval)."""
    metrics = compute_metrics(probs, targets, class_names)
    intervals = metric_intervals(targets, np.asarray(probs).argmax(axis=1))
    for c, ci in intervals.pop("recall_ci").items():
        metrics["per_class"][class_names[c]]["recall_ci"] = ci
    return metrics | intervals


def plot_reliability(bins: list[dict], ece: float, path: Path) -> Path:
    """Accuracy against confidence per bin; the diagonal is perfect calibration."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    centres = [(b["low"] + b["high"]) / 2 for b in bins]
    width = bins[0]["high"] - bins[0]["low"] if bins else 0.1
    ax.bar(centres, [b["accuracy"] for b in bins], width=width * 0.9, color="tab:blue", label="accuracy in bin")
    ax.plot([0, 1], [0, 1], "k--", label="perfect calibration")
    ax.plot(centres, [b["confidence"] for b in bins], "o", color="tab:red", label="mean confidence in bin")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence of the top-1 class (probability)")
    ax.set_ylabel("accuracy (fraction correct)")
    ax.set_title(f"Reliability diagram, ECE = {ece:.4f}")
    ax.legend(loc="upper left")
    return save_figure(fig, path)


def plot_confusion_matrix(matrix: np.ndarray, class_names: list[str], path: Path, normalize: bool) -> Path:
    """Counts, or rates normalized over each true class (rows)."""
    matrix = np.asarray(matrix, dtype=float)
    values = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1) if normalize else matrix.astype(int)
    fig, ax = plt.subplots(figsize=(1.0 * len(class_names) + 3, 0.9 * len(class_names) + 2.5))
    ConfusionMatrixDisplay(values, display_labels=class_names).plot(
        ax=ax, cmap="Blues", xticks_rotation=45, values_format=".2f" if normalize else "d", colorbar=True
    )
    ax.set_title("Confusion matrix, " + ("rate per true class" if normalize else "image counts"))
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    return save_figure(fig, path, dpi=120)


def percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.3f}%"


def accuracy_text(metrics: dict) -> str:
    """Accuracy with its interval, as every report writes it."""
    return METRICS["accuracy"].text(metrics)


def balanced_text(metrics: dict) -> str:
    """Balanced accuracy (mean recall over the classes with test images) with its interval."""
    return METRICS["balanced_accuracy"].text(metrics)


def f1_text(metrics: dict) -> str:
    """macro-F1 with its interval, as every report writes it."""
    return METRICS["f1_macro"].text(metrics)


def write_report(
    out_dir: Path,
    metrics: dict,
    class_names: list[str],
    model_name: str,
    probs: np.ndarray,
    targets: np.ndarray,
    paths: list[str],
    extra_sections: str = "",
) -> Path:
    """From `evaluate`'s metrics: metrics.json, per-class CSV/markdown, confusion matrices (PNG, CSV), reliability
    diagram, predictions.csv and report.md."""
    files = TestReport(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    predicted = probs.argmax(axis=1)
    files.write_predictions(Predictions(list(paths), list(class_names), targets, predicted, probs))
    write_json(files.metrics, {"model": model_name, "class_names": class_names, **metrics})
    header = ["class", "support", "precision", "recall", "recall_ci_low", "recall_ci_high", "f1"]
    per_class_rows = [
        [c, v["support"], v["precision"], v["recall"], *v.get("recall_ci", (None, None)), v["f1"]]
        for c, v in metrics["per_class"].items()
    ]
    write_csv(files.per_class_csv, header, per_class_rows)
    per_class_md = markdown_table(
        ["class", "test images", "precision", "recall [95% CI]", "F1"],
        [
            [
                c,
                v["support"],
                f"{v['precision']:.3f}",
                f"{v['recall']:.3f} [{v['recall_ci'][0]:.3f}, {v['recall_ci'][1]:.3f}]" if "recall_ci" in v else "—",
                f"{v['f1']:.3f}",
            ]
            for c, v in metrics["per_class"].items()
        ],
    )
    write_text(files.per_class_md, per_class_md)
    matrix = np.array(metrics["confusion_matrix"])
    write_csv(
        files.confusion_csv,
        ["true \\ predicted", *class_names],
        [[c, *row] for c, row in zip(class_names, matrix.tolist(), strict=True)],
    )
    plot_confusion_matrix(matrix, class_names, files.confusion_png, normalize=False)
    plot_confusion_matrix(matrix, class_names, files.confusion_rates_png, normalize=True)
    plot_reliability(metrics["calibration_bins"], metrics["ece"], files.reliability_png)
    summary = markdown_table(
        ["model", *[m.label for m in METRICS.values()], "test images"],
        [[model_name, *[m.text(metrics) for m in METRICS.values()], metrics["n"]]],
    )
    missing = metrics.get("classes_without_test_images") or []
    warning = (
        f"**Warning:** no test image of {', '.join(missing)}: this report says nothing about "
        f"{'that class' if len(missing) == 1 else 'those classes'}, and macro-F1 averages the other classes only.\n\n"
        if missing
        else ""
    )
    report = (
        f"# Test report: {model_name}\n\nn = {metrics['n']} test images.\n\n{summary}\n{warning}"
        f"Brackets: {metrics['interval_method']}. F1 is the micro F1 of the original table; for single-label "
        "classification it equals accuracy. macro-F1 averages the F1 of every class that has test images, and balanced "
        "accuracy their recall (each class counts alike, however many images it has). Top-k is "
        "shown as — when k is not below the number of classes.\n\n## Per class\n\n"
        + per_class_md
        + "\n## Confusion matrix\n\n![counts](confusion_matrix.png)\n\n![rates](confusion_matrix_normalized.png)\n"
        + f"\n## Calibration\n\nExpected calibration error (15 bins): {metrics['ece']:.4f}.\n\n"
        "![reliability](reliability.png)\n" + extra_sections
    )
    return write_text(files.report, report)
