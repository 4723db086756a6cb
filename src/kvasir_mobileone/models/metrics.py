"""The running metrics logged per epoch, with the test report's definitions (macro-F1 and balanced accuracy over
the classes present)."""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassStatScores


class PresentClassesF1(MulticlassStatScores):
    """Macro-F1 as the test report defines it (evaluation.metrics.macro_f1): the mean F1 over the classes that have
    images among the targets. torchmetrics' macro average also counts a class that is predicted but absent as 0,
    which on small imbalanced val sets picks checkpoints by another number than the one published."""

    def __init__(self, num_classes: int, **kwargs):
        super().__init__(num_classes, average=None, **kwargs)

    def compute(self) -> torch.Tensor:
        tp, fp, _, fn = self._final_state()
        f1 = 2 * tp / (2 * tp + fp + fn).clamp_min(1)
        present = (tp + fn) > 0
        return f1[present].float().mean() if present.any() else torch.tensor(0.0, device=tp.device)


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
    metrics: dict[str, Any] = {"acc": MulticlassAccuracy(num_classes, average="micro")}
    if stage in ("val", "test"):
        metrics["f1_macro"] = PresentClassesF1(num_classes)
        metrics["balanced_acc"] = PresentClassesRecall(num_classes)
    return MetricCollection(metrics, prefix=f"{stage}/")
