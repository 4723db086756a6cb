"""One function per metric, on numpy arrays of class indices and probabilities. The test report, compare, cv,
features and the bootstrap intervals all use these, so a number means the same everywhere.

Accuracy-type metrics and macro-F1 take an `axis`, so that bootstrap resamples are computed in one call."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import confusion_matrix, matthews_corrcoef, precision_recall_fscore_support, top_k_accuracy_score

from kvasir_mobileone.evaluation.stats import expected_calibration_error
from kvasir_mobileone.metrics import macro_f1_from_counts

TOP_KS = (3, 5)


def accuracy(targets: np.ndarray, predicted: np.ndarray, axis: int = -1) -> np.ndarray | float:
    """Share of images whose top-1 class is the true class."""
    return np.mean(np.asarray(targets) == np.asarray(predicted), axis=axis)


def macro_f1(targets: np.ndarray, predicted: np.ndarray, labels, axis: int = -1) -> np.ndarray | float:
    """kvasir_mobileone.metrics.macro_f1_from_counts over `labels`: the classes that have test images
    (`present_classes`), so a class missing from the test split neither counts as 0 nor goes unmentioned (the
    report lists it). Along `axis` for bootstrap resamples."""
    targets, predicted = np.asarray(targets), np.asarray(predicted)
    if not len(labels):
        return np.nan
    tp = np.stack([np.sum((targets == c) & (predicted == c), axis=axis) for c in labels])
    wrong = np.stack([np.sum((targets == c) != (predicted == c), axis=axis) for c in labels])  # FP + FN
    return macro_f1_from_counts(tp, wrong, np.ones((len(labels),) + (1,) * (tp.ndim - 1), dtype=bool))


def balanced_accuracy(targets: np.ndarray, predicted: np.ndarray, labels, axis: int = -1) -> np.ndarray | float:
    """Mean over `labels` (the classes that have test images) of each class's recall: every class counts alike,
    however many images it has."""
    targets, predicted = np.asarray(targets), np.asarray(predicted)
    recalls = []
    for c in labels:
        is_true = targets == c
        hits = np.sum(is_true & (predicted == c), axis=axis)
        recalls.append(hits / np.maximum(np.sum(is_true, axis=axis), 1))
    return np.mean(recalls, axis=0)


TOP1_METRICS = ("accuracy", "f1_micro", "f1_macro", "balanced_accuracy")  # what top-1 predictions alone give


def top1_metric(key: str, labels):
    """The metric `key` of kvasir_mobileone.metrics that top-1 predictions give, as f(targets, predicted, axis):
    what the bootstrap intervals and compare recompute on resampled or shared test images."""
    return {
        "accuracy": lambda t, p, axis=-1: accuracy(t, p, axis),
        "f1_micro": lambda t, p, axis=-1: accuracy(t, p, axis),  # micro-F1 is accuracy for single-label
        "f1_macro": lambda t, p, axis=-1: macro_f1(t, p, labels, axis),
        "balanced_accuracy": lambda t, p, axis=-1: balanced_accuracy(t, p, labels, axis),
    }[key]


def present_classes(targets: np.ndarray) -> np.ndarray:
    """The class indices that have at least one test image."""
    return np.unique(np.asarray(targets))


def log_loss(probs: np.ndarray, targets: np.ndarray) -> float:
    """Mean negative log-probability of the true class (cross-entropy), probabilities clipped at 1e-12."""
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(targets)), targets], 1e-12, 1.0))))


def top_k_accuracy(probs: np.ndarray, targets: np.ndarray, k: int) -> float | None:
    """Share of images whose true class is among the k most probable; None when k covers every class."""
    n_classes = probs.shape[1]
    return None if k >= n_classes else float(top_k_accuracy_score(targets, probs, k=k, labels=np.arange(n_classes)))


def compute_metrics(probs: np.ndarray, targets: np.ndarray, class_names: list[str]) -> dict:
    """Every number of a test report (without intervals: see evaluation.intervals)."""
    probs, targets = np.asarray(probs, dtype=np.float64), np.asarray(targets, dtype=np.int64)
    predicted = probs.argmax(axis=1)
    labels = np.arange(len(class_names))
    present = present_classes(targets)
    precision, recall, f1, support = precision_recall_fscore_support(targets, predicted, labels=labels, zero_division=0)
    calibration = expected_calibration_error(probs, targets)
    return {
        "n": int(len(targets)),
        "loss": log_loss(probs, targets),
        "accuracy": float(accuracy(targets, predicted)),
        **{f"top{k}": top_k_accuracy(probs, targets, k) for k in TOP_KS},
        "f1_macro": float(macro_f1(targets, predicted, present)),
        "balanced_accuracy": float(balanced_accuracy(targets, predicted, present)),
        "f1_micro": float(accuracy(targets, predicted)),  # micro-F1 equals accuracy for single-label classification
        "mcc": float(matthews_corrcoef(targets, predicted)),
        "classes_without_test_images": [class_names[c] for c in labels if c not in set(present.tolist())],
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(class_names, precision, recall, f1, support, strict=True)
        },
        "confusion_matrix": confusion_matrix(targets, predicted, labels=labels).tolist(),
        "ece": calibration["ece"],
        "calibration_bins": calibration["bins"],
    }
