"""Every metric a report publishes, in one place: its key (metrics.json, compare.csv), its label in tables, how it is
written, its 95% interval and the name training logs it under; and the one definition of macro-F1 that the logged
val/f1_macro (models/metrics.py, torch) and the report's (evaluation/metrics.py, numpy) both compute.

Adding a metric: a line in METRICS, its value in evaluation/metrics.compute_metrics, and (for an interval) its
function in evaluation/intervals.INTERVAL_FUNCTIONS; the report, compare and cv tables read it from here. No torch,
no numpy: anything may import this."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Metric:
    key: str  # metrics.json's key; "<key>_ci" its interval
    label: str  # the column heading of every table
    style: Literal["percent", "decimal"]  # 91.625% or 0.9123
    interval: Literal["wilson", "bootstrap"] | None = None  # Wilson (a proportion) or BCa bootstrap over test images
    logged: str | None = None  # logged per epoch as <stage>/<logged> (val and test; train/acc too)

    def value_text(self, value: float | None) -> str:
        if value is None:
            return "—"
        return f"{100 * value:.3f}%" if self.style == "percent" else f"{value:.4f}"

    def text(self, metrics: dict) -> str:
        """The value with its interval when `metrics` has one, as every table writes it."""
        value, ci = metrics.get(self.key), metrics.get(f"{self.key}_ci")
        if ci is None:
            return self.value_text(value)
        return f"{self.value_text(value)} [{self.value_text(ci[0])}, {self.value_text(ci[1])}]"


# in the order of the report's headline table (the original workflow's Accuracy, Top-3, Top-5, F1 first)
METRICS = {
    m.key: m
    for m in (
        Metric("accuracy", "Accuracy", "percent", "wilson", logged="acc"),
        Metric("top3", "Top-3", "percent"),
        Metric("top5", "Top-5", "percent"),
        Metric("f1_micro", "F1", "decimal"),  # micro-F1: equals accuracy for single-label classification
        Metric("f1_macro", "macro-F1", "decimal", "bootstrap", logged="f1_macro"),
        Metric("balanced_accuracy", "balanced accuracy", "percent", "bootstrap", logged="balanced_acc"),
        Metric("mcc", "MCC", "decimal"),
        Metric("ece", "ECE", "decimal"),
    )
}
LOSS = Metric("loss", "NLL", "decimal")  # the mean cross-entropy of the true class (the report's calibration table)
WITH_INTERVALS = tuple(k for k, m in METRICS.items() if m.interval)  # what compare and the leak-free rows publish
BOOTSTRAPPED = " and ".join(m.label for m in METRICS.values() if m.interval == "bootstrap")  # for the reports' words


def macro_f1_from_counts(tp, wrong, present):
    """Mean over the present classes of each class's F1 = 2TP / (2TP + FP + FN) (0 for a class with none of them);
    `wrong` = FP + FN, `present` marks the classes averaged (those with images among the targets). Per-class arrays
    along the first axis, numpy or torch alike: the running val/f1_macro and the report's macro-F1 are this one
    function. A class predicted but absent from the targets is not averaged (torchmetrics' macro average counts it
    as 0, which on small val sets picks checkpoints by another number than the one published)."""
    f1 = 2 * tp / (2 * tp + wrong).clip(min=1)
    present = present * 1.0
    return (f1 * present).sum(axis=0) / present.sum(axis=0).clip(min=1)
