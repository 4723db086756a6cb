"""The running metrics logged per epoch, with the test report's definitions (macro-F1 and balanced accuracy over
the classes present)."""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassStatScores

from kvasir_mobileone.metrics import METRICS, macro_f1_from_counts


class PresentClassesF1(MulticlassStatScores):
    """Macro-F1 as the test report defines it: kvasir_mobileone.metrics.macro_f1_from_counts over the classes that
    have images among the targets."""

    def __init__(self, num_classes: int, **kwargs):
        super().__init__(num_classes, average=None, **kwargs)

    def compute(self) -> torch.Tensor:
        tp, fp, _, fn = self._final_state()
        return macro_f1_from_counts(tp.double(), (fp + fn).double(), (tp + fn) > 0).float()


class PresentClassesRecall(MulticlassStatScores):
    """Balanced accuracy as the test report defines it: the mean recall over the classes that have images."""

    def __init__(self, num_classes: int, **kwargs):
        super().__init__(num_classes, average=None, **kwargs)

    def compute(self) -> torch.Tensor:
        tp, _, _, fn = self._final_state()
        present = (tp + fn) > 0
        return (tp[present] / (tp + fn)[present]).float().mean() if present.any() else torch.tensor(0.0)


def stage_metrics(num_classes: int, stage: str) -> MetricCollection:
    """Running metrics logged per epoch (the test report computes its own from the gathered predictions, with the
    same definitions)."""
    logged = {m.key: m.logged for m in METRICS.values() if m.logged}  # the names of kvasir_mobileone/metrics.py
    metrics: dict[str, Any] = {logged["accuracy"]: MulticlassAccuracy(num_classes, average="micro")}
    if stage in ("val", "test"):
        metrics[logged["f1_macro"]] = PresentClassesF1(num_classes)
        metrics[logged["balanced_accuracy"]] = PresentClassesRecall(num_classes)
    return MetricCollection(metrics, prefix=f"{stage}/")
