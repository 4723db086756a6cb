"""Statistics on predictions: bootstrap confidence intervals, McNemar's test, calibration. Pure numpy/scipy."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.stats import binomtest
from sklearn.metrics import f1_score


def accuracy(targets: np.ndarray, predicted: np.ndarray) -> float:
    return float(np.mean(targets == predicted))


def macro_f1(targets: np.ndarray, predicted: np.ndarray, n_classes: int) -> float:
    return float(f1_score(targets, predicted, labels=np.arange(n_classes), average="macro", zero_division=0))


def bootstrap_ci(
    targets: np.ndarray,
    predicted: np.ndarray,
    statistic: Callable[[np.ndarray, np.ndarray], float],
    n_resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of statistic(targets, predicted), resampling test images with replacement."""
    rng = np.random.default_rng(seed)
    n = len(targets)
    values = np.array([statistic(targets[idx], predicted[idx]) for idx in rng.integers(0, n, size=(n_resamples, n))])
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> dict:
    """Exact McNemar test on paired predictions: b = only A right, c = only B right; two-sided binomial p."""
    b = int(np.sum(correct_a & ~correct_b))
    c = int(np.sum(~correct_a & correct_b))
    p = binomtest(min(b, c), b + c, 0.5).pvalue if b + c else 1.0
    return {"only_a_correct": b, "only_b_correct": c, "p_value": float(p)}


def expected_calibration_error(probs: np.ndarray, targets: np.ndarray, bins: int = 15) -> dict:
    """ECE over equal-width confidence bins, with the per-bin confidence, accuracy and count for a diagram."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == targets
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    rows = []
    ece = 0.0
    for k in range(bins):
        mask = which == k
        if mask.any():
            conf, acc = float(confidence[mask].mean()), float(correct[mask].mean())
            ece += mask.mean() * abs(acc - conf)
            rows.append({"low": float(edges[k]), "high": float(edges[k + 1]), "confidence": conf, "accuracy": acc,
                         "count": int(mask.sum())})  # fmt: skip
    return {"ece": float(ece), "bins": rows}


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def fit_temperature(probs: np.ndarray, targets: np.ndarray) -> float:
    """Temperature T minimising the negative log-likelihood of softmax(log(probs) / T) (Guo et al., 2017)."""
    log_probs = np.log(np.clip(probs, 1e-12, 1.0))

    def nll(t: float) -> float:
        scaled = softmax(log_probs / t)
        return float(-np.mean(np.log(np.clip(scaled[np.arange(len(targets)), targets], 1e-12, 1.0))))

    return float(minimize_scalar(nll, bounds=(0.05, 20.0), method="bounded").x)


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    return softmax(np.log(np.clip(probs, 1e-12, 1.0)) / temperature)
