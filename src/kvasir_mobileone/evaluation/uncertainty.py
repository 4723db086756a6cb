"""Fitting a model's Uncertainty (answers.py) and measuring it: each detector fitted on training features, its
threshold set on val at the false-alarm rate (a conformal quantile), abstention by Geifman and El-Yaniv's
selection with guaranteed risk (2017), split-conformal APS sets; then the figures on the test images and on images
that are not endoscopy (data/foreign.py). numpy, scipy and scikit-learn only."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import beta, norm
from sklearn.covariance import LedoitWolf
from sklearn.metrics import roc_auc_score

from kvasir_mobileone.answers import (
    AUTO,
    DETECTORS,
    Uncertainty,
    UncertaintyConfig,
    aps_scores,
    normalized,
    prediction_sets,
    softmax,
)
from kvasir_mobileone.evaluation.stats import wilson_interval

LEVEL = 0.95


@dataclass(frozen=True)
class Outputs:
    """The network's logits and pooled features (timm's pre-logits) on some images, with their labels (None for
    images of no class)."""

    logits: np.ndarray
    features: np.ndarray
    targets: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.logits)

    @property
    def probs(self) -> np.ndarray:
        return softmax(np.asarray(self.logits, np.float64))

    @property
    def correct(self) -> np.ndarray:
        return self.probs.argmax(axis=1) == self.targets


def fit_detector(name: str, train: Outputs) -> tuple[dict[str, np.ndarray], int]:
    """(arrays, k) of a detector fitted on training outputs, stored as float32 (what a bundle carries)."""
    if name == "energy":
        return {}, 0
    features = np.asarray(train.features, np.float64)
    if name == "mahalanobis":
        present = np.unique(train.targets)
        means = np.stack([features[train.targets == c].mean(axis=0) for c in present])
        centred = features - means[np.searchsorted(present, train.targets)]
        precision = LedoitWolf(assume_centered=True).fit(centred).precision_
        return {"means": means.astype(np.float32), "precision": precision.astype(np.float32)}, 0
    bank = normalized(features).astype(np.float32)
    return {"bank": bank}, max(1, len(bank) // 100)  # Sun et al.: k grows with the bank (k=50 of 50,000 on CIFAR)


def conformal_quantile(scores: np.ndarray, level: float) -> float | None:
    """The ceil((n + 1) level)-th smallest score: a new exchangeable score is at most it with probability >= level.
    None when n is too small for that level (the rank would exceed n)."""
    n = len(scores)
    rank = math.ceil((n + 1) * level)
    return None if rank > n or n == 0 else float(np.sort(scores)[rank - 1])


def upper_bound(errors: int, n: int, confidence: float) -> float:
    """One-sided Clopper-Pearson upper bound of an error rate."""
    return 1.0 if errors >= n else float(beta.ppf(confidence, errors + 1, n - errors))


def selective_threshold(confidence: np.ndarray, correct: np.ndarray, target: float, level: float) -> dict:
    """Selection with guaranteed risk (Geifman and El-Yaniv 2017): the lowest top-class probability threshold whose
    binomial upper bound on the error among the images kept is at most `target`, by binary search over the val
    confidences with the bound's level split over its steps (Bonferroni). threshold None: no threshold meets it."""
    order = np.sort(confidence)
    n = len(order)
    steps = max(1, math.ceil(math.log2(n + 1))) if n else 1
    per_step = 1 - (1 - level) / steps
    lo, hi, best = 0, n - 1, None
    for _ in range(steps):
        if lo > hi:
            break
        mid = (lo + hi) // 2
        kept = confidence >= order[mid]
        bound = upper_bound(int((~correct[kept]).sum()), int(kept.sum()), per_step)
        if bound <= target:
            best, hi = (mid, bound), mid - 1
        else:
            lo = mid + 1
    if best is None:
        return {"threshold": None, "val_images": n}
    kept = confidence >= order[best[0]]
    return {
        "threshold": float(order[best[0]]),
        "val_images": n,
        "val_coverage": float(kept.mean()),
        "val_error": float((~correct[kept]).mean()),
        "val_error_bound": best[1],
    }


def auroc(inside: np.ndarray, outside: np.ndarray) -> float:
    return float(roc_auc_score(np.r_[np.zeros(len(inside)), np.ones(len(outside))], np.r_[inside, outside]))


def fit_uncertainty(
    train: Outputs,
    val: Outputs,
    config: UncertaintyConfig,
    selection: Outputs | None = None,
    compare: tuple[Outputs, Outputs] | None = None,
) -> Uncertainty:
    """The detector fitted on `train` with every threshold set on `val`. --uncertainty.detector auto takes the one
    whose val images stand apart best from `selection` (foreign images; energy without them); with `compare` =
    (test, foreign), every detector's figures side by side on them (recorded, never used to decide)."""
    drafts, thresholds, detectors, chosen_by = {}, {}, {}, {}
    for name in DETECTORS:
        arrays, k = fit_detector(name, train)
        draft = Uncertainty(
            name, config.ood_false_alarm, None, config.target_error, None, config.coverage, None, k, arrays
        )
        val_scores = draft.ood_scores(val.logits, val.features)
        drafts[name] = draft
        thresholds[name] = conformal_quantile(val_scores, 1 - config.ood_false_alarm)
        if selection is not None and len(val):
            chosen_by[name] = auroc(val_scores, draft.ood_scores(selection.logits, selection.features))
        if compare is not None:
            detectors[name] = ood_figures(draft, thresholds[name], *compare)
    best = max(chosen_by, key=chosen_by.get) if chosen_by else "energy"  # ties: the first, the simplest
    name = best if config.detector == AUTO else config.detector
    draft, threshold = drafts[name], thresholds[name]
    probs = val.probs
    selective = selective_threshold(probs.max(axis=1), val.correct, config.target_error, config.confidence)
    true_scores = aps_scores(probs)[np.arange(len(val)), val.targets]
    fitted = {
        "train_images": len(train),
        "val_images": len(val),
        "chosen": "asked for" if config.detector != AUTO else "auto",
        "selection_auroc": chosen_by,  # val against foreign images of another seed than the report's
        "selection_images": len(selection) if selection is not None else 0,
        "selective": selective,
        "confidence": config.confidence,
        "detectors": detectors,
        "probabilities": "softmax(logits), temperature 1, no flip TTA",
    }
    return Uncertainty(
        draft.detector,
        config.ood_false_alarm,
        threshold,
        config.target_error,
        selective["threshold"],
        config.coverage,
        conformal_quantile(true_scores, config.coverage),
        draft.k,
        draft.arrays,
        fitted,
    )


def auroc_interval(auc: float, positives: int, negatives: int, level: float = LEVEL) -> tuple[float, float]:
    """Hanley and McNeil's (1982) normal interval of an AUROC."""
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    var = (auc * (1 - auc) + (positives - 1) * (q1 - auc**2) + (negatives - 1) * (q2 - auc**2)) / (
        positives * negatives
    )
    half = float(norm.ppf(0.5 + level / 2)) * math.sqrt(max(var, 0.0))
    return max(0.0, auc - half), min(1.0, auc + half)


def rate(flags: np.ndarray) -> dict:
    k, n = int(np.sum(flags)), len(flags)
    return {"count": k, "n": n, "rate": k / n if n else float("nan"), "ci": wilson_interval(k, n)}


def ood_figures(uncertainty: Uncertainty, threshold: float | None, inside: Outputs, foreign: Outputs) -> dict:
    """AUROC of in-distribution (test) against foreign images, with its interval; the share of each flagged."""
    scores_in = uncertainty.ood_scores(inside.logits, inside.features)
    scores_out = uncertainty.ood_scores(foreign.logits, foreign.features)
    auc = auroc(scores_in, scores_out)
    flagged = (lambda s: s > threshold) if threshold is not None else (lambda s: np.zeros(len(s), dtype=bool))
    return {
        "auroc": auc,
        "auroc_ci": auroc_interval(auc, len(scores_out), len(scores_in)),
        "threshold": threshold,
        "false_alarm": rate(flagged(scores_in)),
        "foreign_flagged": rate(flagged(scores_out)),
    }


def risk_coverage(uncertain: np.ndarray, correct: np.ndarray) -> dict:
    """Error among the answered images against the share answered, most certain first; AURC is the mean risk over
    every coverage (Geifman et al. 2019)."""
    order = np.argsort(uncertain, kind="stable")
    errors = np.cumsum(~correct[order])
    answered = np.arange(1, len(order) + 1)
    risk = errors / answered
    return {"coverage": answered / len(order), "risk": risk, "aurc": float(risk.mean())}


def measure(uncertainty: Uncertainty, test: Outputs, foreign: Outputs, class_names: list[str]) -> dict:
    """Every figure of the report's "I don't know" section, on the test images (and the foreign ones)."""
    probs, correct = test.probs, test.correct
    confidence = probs.max(axis=1)
    scores = uncertainty.ood_scores(test.logits, test.features)
    curves = {
        "confidence": risk_coverage(-confidence, correct),
        f"ood score ({uncertainty.detector})": risk_coverage(scores, correct),
    }
    kept = (
        confidence >= uncertainty.confidence_threshold
        if uncertainty.confidence_threshold is not None
        else np.ones(len(test), dtype=bool)
    )
    sets = prediction_sets(probs, uncertainty.qhat)
    covered = np.array([t in s for t, s in zip(test.targets, sets, strict=True)])
    sizes = np.array([len(s) for s in sets])
    per_class = {
        name: rate(covered[test.targets == c]) | {"mean_size": float(sizes[test.targets == c].mean())}
        for c, name in enumerate(class_names)
        if (test.targets == c).any()
    }
    return {
        "ood": {"detector": uncertainty.detector, "k": uncertainty.k}
        | ood_figures(uncertainty, uncertainty.ood_threshold, test, foreign)
        | {"detectors": uncertainty.fitted.get("detectors", {})},
        "selective": {
            "threshold": uncertainty.confidence_threshold,
            "target_error": uncertainty.target_error,
            "val": uncertainty.fitted.get("selective", {}),
            "coverage": rate(kept),
            "error_answered": rate(~correct[kept]) if kept.any() else None,
            "aurc": {k: v["aurc"] for k, v in curves.items()},
        },
        "conformal": {
            "coverage_target": uncertainty.coverage,
            "qhat": uncertainty.qhat,
            "coverage": rate(covered),
            "mean_size": float(sizes.mean()),
            "size_counts": {int(s): int((sizes == s).sum()) for s in np.unique(sizes)},
            "per_class": per_class,
        },
        "curves": curves,
    }
