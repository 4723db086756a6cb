"""95% intervals for the numbers a user publishes: accuracy (Wilson), macro-F1 (BCa bootstrap over test images),
and paired bootstrap intervals for the difference between two models tested on the same images."""

from __future__ import annotations

import numpy as np

from kvasir_mobileone.evaluation.metrics import accuracy, balanced_accuracy, macro_f1, present_classes
from kvasir_mobileone.evaluation.stats import bootstrap_interval, matched_pairs_interval, mcnemar, wilson_interval


def metric_intervals(targets: np.ndarray, predicted: np.ndarray, n_resamples: int = 2000, seed: int = 0) -> dict:
    """{accuracy_ci: (low, high) Wilson, f1_macro_ci and balanced_accuracy_ci: (low, high) BCa bootstrap,
    recall_ci: {class index: (low, high) Wilson}}."""
    targets, predicted = np.asarray(targets), np.asarray(predicted)
    labels = present_classes(targets)
    return {
        "accuracy_ci": wilson_interval(int(np.sum(targets == predicted)), len(targets)),
        "f1_macro_ci": bootstrap_interval(
            lambda t, p, axis: macro_f1(t, p, labels, axis), (targets, predicted), n_resamples, seed=seed
        ),
        "balanced_accuracy_ci": bootstrap_interval(
            lambda t, p, axis: balanced_accuracy(t, p, labels, axis), (targets, predicted), n_resamples, seed=seed
        ),
        "recall_ci": {
            int(c): wilson_interval(int(np.sum((targets == c) & (predicted == c))), int(np.sum(targets == c)))
            for c in labels
        },
        "interval_method": (
            f"95%: Wilson for accuracy and each class's recall; BCa bootstrap over test images ({n_resamples}) for "
            "macro-F1 and balanced accuracy"
        ),
    }


def paired_difference(
    targets: np.ndarray, predicted_a: np.ndarray, predicted_b: np.ndarray, n_resamples: int = 2000, seed: int = 0
) -> dict:
    """A − B in accuracy and macro-F1 with paired BCa bootstrap intervals, and McNemar's exact test. When the two
    models agree on every image, a bootstrap over images is a point ([0, 0]) that claims certainty the test set
    cannot give: the accuracy interval is then Agresti and Min's for matched proportions, which stays honest with no
    disagreement."""
    targets, a, b = np.asarray(targets), np.asarray(predicted_a), np.asarray(predicted_b)
    labels = present_classes(targets)

    def acc_diff(t, x, y, axis):
        return accuracy(t, x, axis) - accuracy(t, y, axis)

    def f1_diff(t, x, y, axis):
        return macro_f1(t, x, labels, axis) - macro_f1(t, y, labels, axis)

    accuracy_ci = bootstrap_interval(acc_diff, (targets, a, b), n_resamples, seed=seed)
    only_a, only_b = int(np.sum((a == targets) & (b != targets))), int(np.sum((b == targets) & (a != targets)))
    if only_a == only_b == 0:
        accuracy_ci = matched_pairs_interval(0, 0, len(targets))
    return {
        "accuracy_difference": float(acc_diff(targets, a, b, -1)),
        "accuracy_difference_ci": accuracy_ci,
        "f1_macro_difference": float(f1_diff(targets, a, b, -1)),
        "f1_macro_difference_ci": bootstrap_interval(f1_diff, (targets, a, b), n_resamples, seed=seed),
        **mcnemar(a == targets, b == targets),
    }
