"""95% intervals for the numbers a user publishes: accuracy (Wilson), macro-F1 (BCa bootstrap over test images),
and paired bootstrap intervals for the difference between two models tested on the same images."""

from __future__ import annotations

import numpy as np

from kvasir_mobileone.evaluation.metrics import accuracy, macro_f1, present_classes, top1_metric
from kvasir_mobileone.evaluation.stats import bootstrap_interval, matched_pairs_interval, mcnemar, wilson_interval
from kvasir_mobileone.metrics import BOOTSTRAPPED, METRICS, WITH_INTERVALS


def metric_intervals(targets: np.ndarray, predicted: np.ndarray, n_resamples: int = 2000, seed: int = 0) -> dict:
    """{<key>_ci: (low, high)} for every metric of kvasir_mobileone.metrics with an interval (Wilson for accuracy,
    BCa bootstrap over test images for the others), recall_ci: {class index: (low, high) Wilson}, and the method in
    words."""
    targets, predicted = np.asarray(targets), np.asarray(predicted)
    labels = present_classes(targets)
    found = {}
    for key in WITH_INTERVALS:
        if METRICS[key].interval == "wilson":  # a proportion of correct answers
            found[f"{key}_ci"] = wilson_interval(int(np.sum(targets == predicted)), len(targets))
        else:
            found[f"{key}_ci"] = bootstrap_interval(
                top1_metric(key, labels), (targets, predicted), n_resamples, seed=seed
            )
    return found | {
        "recall_ci": {
            int(c): wilson_interval(int(np.sum((targets == c) & (predicted == c))), int(np.sum(targets == c)))
            for c in labels
        },
        "interval_method": (
            f"95%: Wilson for accuracy and each class's recall; BCa bootstrap over test images ({n_resamples}) for "
            f"{BOOTSTRAPPED}"
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
