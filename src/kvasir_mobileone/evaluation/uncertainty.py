"""Fitting a model's Uncertainty (answers.py) and measuring it: each detector fitted on training features, its
threshold set on val at the false-alarm rate (a conformal quantile), abstention by Geifman and El-Yaniv's
selection with guaranteed risk (2017), split-conformal APS sets; then the figures on the test images and on images
that are not endoscopy (data/foreign.py). numpy, scipy and scikit-learn only."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import beta, norm
from sklearn.covariance import LedoitWolf
from sklearn.metrics import roc_auc_score

from kvasir_mobileone.answers import (
    AUTO,
    HEAD_DETECTORS,
    NETWORK_DETECTORS,
    Uncertainty,
    UncertaintyConfig,
    aps_scores,
    normalized,
    prediction_sets,
    softmax,
)
from kvasir_mobileone.errors import UserError
from kvasir_mobileone.evaluation.stats import wilson_interval

LEVEL = 0.95


@dataclass(frozen=True)
class Outputs:
    """The network's logits and pooled features (timm's pre-logits) on some images, with their labels (None for
    images of no class), the images' input statistics (answers.input_statistics; None where not read) and their
    near-duplicate groups (the manifest's; None: every image its own)."""

    logits: np.ndarray
    features: np.ndarray
    targets: np.ndarray | None = None
    statistics: np.ndarray | None = None
    groups: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.logits)

    @property
    def probs(self) -> np.ndarray:
        return softmax(np.asarray(self.logits, np.float64))

    @property
    def correct(self) -> np.ndarray:
        return self.probs.argmax(axis=1) == self.targets


def fit_detector(name: str, train: Outputs, head: tuple[np.ndarray, np.ndarray] | None = None):
    """(arrays, k) of a detector fitted on training outputs, stored as float32 (what a bundle carries). `head`: the
    classifier's (weight, bias), which vim and react read (models/backbone.head_weights)."""
    features = np.asarray(train.features, np.float64)
    if name == "energy":
        return {}, 0
    if name == "input":
        stats = np.asarray(train.statistics, np.float64)
        cov = LedoitWolf().fit(stats)
        return {"input_mean": stats.mean(axis=0), "input_precision": cov.precision_}, 0
    if name in ("mahalanobis", "relative_mahalanobis"):
        present = np.unique(train.targets)
        means = np.stack([features[train.targets == c].mean(axis=0) for c in present])
        centred = features - means[np.searchsorted(present, train.targets)]
        arrays = {"means": means, "precision": LedoitWolf(assume_centered=True).fit(centred).precision_}
        if name == "relative_mahalanobis":
            background = LedoitWolf().fit(features)
            arrays |= {"background_mean": background.location_, "background_precision": background.precision_}
        return as_stored(arrays), 0
    if name in HEAD_DETECTORS:
        if head is None:
            raise UserError(
                f"--uncertainty.detector {name} reads the classifier's last linear layer, and this network's head is "
                "not one: choose another detector."
            )
        weight, bias = (np.asarray(a, np.float64) for a in head)
        if name == "react":
            return as_stored({"head_weight": weight, "head_bias": bias, "clip": [np.percentile(features, 90)]}), 0
        origin = -np.linalg.pinv(weight) @ bias  # Wang et al.: the point the logits are measured from
        centred = features - origin
        width = features.shape[1]
        kept = 1000 if width >= 2048 else 512 if width >= 768 else width // 2  # theirs: 1000 of 2048, 512 of 768
        _, vectors = np.linalg.eigh(centred.T @ centred / len(centred))
        null_space = vectors[:, : width - kept]  # eigh sorts ascending: the smallest directions
        residual = np.linalg.norm(centred @ null_space, axis=1)
        alpha = np.asarray(train.logits, np.float64).max(axis=1).mean() / max(residual.mean(), 1e-12)
        return as_stored({"origin": origin, "null_space": null_space, "alpha": [alpha]}), 0
    bank = normalized(features).astype(np.float32)
    return {"bank": bank}, max(1, len(bank) // 100)  # Sun et al.: k grows with the bank (k=50 of 50,000 on CIFAR)


def as_stored(arrays: dict) -> dict[str, np.ndarray]:
    return {k: np.asarray(v, np.float64).astype(np.float32) for k, v in arrays.items()}


def conformal_quantile(scores: np.ndarray, level: float, groups: np.ndarray | None = None) -> float | None:
    """The threshold a new image's score stays at or under with probability >= level. Without groups (every image
    exchangeable): the ceil((n + 1) level)-th smallest score. With near-duplicate groups (frames of one examination)
    the groups are the exchangeable units: the smallest score t whose share of frames above it, averaged over the
    G groups with a new group's counted as 1, is at most 1 - level ((sum_g above_g(t) + 1) / (G + 1) <= 1 - level;
    it is the first rule when every group holds one image). None when there are too few images (or groups)."""
    scores = np.asarray(scores, np.float64)
    n = len(scores)
    if n == 0:
        return None
    if groups is None or len(np.unique(groups)) == n:
        rank = math.ceil((n + 1) * level)
        return None if rank > n else float(np.sort(scores)[rank - 1])
    _, group_index, sizes = np.unique(np.asarray(groups), return_inverse=True, return_counts=True)
    count = len(sizes)
    weight = 1.0 / sizes[group_index]  # each group weighs 1 in all
    order = np.argsort(-scores, kind="stable")
    above = np.concatenate([[0.0], np.cumsum(weight[order])])  # above[i]: the weight of the i highest scores
    allowed = (1 - level) * (count + 1) - 1 + 1e-12  # (float rounding)
    best = None
    for i in range(n):  # threshold scores[order[i]]: the weight strictly above it
        t = scores[order[i]]
        if i and t == scores[order[i - 1]]:
            continue
        if above[np.searchsorted(-scores[order], -t, side="left")] <= allowed:
            best = t
        else:
            break
    return None if best is None else float(best)


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
    head: tuple[np.ndarray, np.ndarray] | None = None,
) -> Uncertainty:
    """The detector fitted on `train` with every threshold set on `val` (its near-duplicate groups as the units).
    --uncertainty.detector auto takes the network detector whose val images stand apart best from `selection`
    (foreign images of other sources than the report's; energy without them); with the input check (the default,
    when the outputs carry input statistics) the input detector stands beside it, each at half the false-alarm
    rate. With `compare` = (test, foreign), every detector's figures side by side on them, each alone at the whole
    rate, and the pair as fitted (recorded, never used to decide). `head`: the classifier's (weight, bias) for vim
    and react (left out without it)."""
    paired = config.input_check and config.detector != "input" and train.statistics is not None
    rate_each = config.ood_false_alarm / 2 if paired else config.ood_false_alarm
    drafts, chosen_by, detectors = {}, {}, {}
    names = [n for n in NETWORK_DETECTORS if head is not None or n not in HEAD_DETECTORS]
    if compare is None and config.detector != AUTO:  # one detector asked for and nothing to compare: fit it alone
        names = [] if config.detector == "input" else [config.detector]
    names += ["input"] if train.statistics is not None else []
    for name in names:
        arrays, k = fit_detector(name, train, head)
        draft = Uncertainty(name, config.ood_false_alarm, None, config.target_error, None, config.coverage, None, k)
        draft = dataclasses.replace(draft, arrays=arrays)
        drafts[name] = draft
        if selection is not None and len(val) and name != "input":
            chosen_by[name] = auroc(scores_of(draft, val), scores_of(draft, selection))
        if compare is not None:
            alone = with_thresholds(draft, val, config.ood_false_alarm)
            detectors[name] = ood_figures(alone, *compare)
    if config.detector == "input":
        network = None
    else:
        best = max(chosen_by, key=chosen_by.get) if chosen_by else "energy"  # ties: the first, the simplest
        network = drafts[best if config.detector == AUTO else config.detector]
    found = network or drafts["input"]
    if paired:
        found = dataclasses.replace(found, arrays=found.arrays | drafts["input"].arrays)
    found = with_thresholds(found, val, rate_each)
    if compare is not None and paired:
        detectors[f"{found.detector} + input"] = ood_figures(found, *compare)
    probs = val.probs
    selective = selective_threshold(probs.max(axis=1), val.correct, config.target_error, config.confidence)
    true_scores = aps_scores(probs)[np.arange(len(val)), val.targets]
    groups = len(np.unique(val.groups)) if val.groups is not None else len(val)
    fitted = {
        "train_images": len(train),
        "val_images": len(val),
        "val_groups": groups,  # the units the false-alarm threshold is set over
        "chosen": "asked for" if config.detector != AUTO else "auto",
        "selection_auroc": chosen_by,  # val against the selection set (other sources than the report's)
        "selection_images": len(selection) if selection is not None else 0,
        "input_check": paired or config.detector == "input",
        "rate_each": rate_each,
        "selective": selective,
        "confidence": config.confidence,
        "detectors": detectors,
        "probabilities": "softmax(logits), temperature 1, no flip TTA",
    }
    return dataclasses.replace(
        found,
        confidence_threshold=selective["threshold"],
        qhat=conformal_quantile(true_scores, config.coverage),
        fitted=fitted,
    )


def with_thresholds(found: Uncertainty, val: Outputs, rate_each: float) -> Uncertainty:
    """The detector's threshold (and the input check's) set on val at `rate_each` false alarms each."""
    network = found.ood_scores(val.logits, val.features)
    checked = found.input_scores(val.statistics)
    return dataclasses.replace(
        found,
        ood_threshold=conformal_quantile(network, 1 - rate_each, val.groups) if network is not None else None,
        input_threshold=conformal_quantile(checked, 1 - rate_each, val.groups) if checked is not None else None,
    )


def scores_of(found: Uncertainty, outputs: Outputs) -> np.ndarray:
    """One out-of-distribution score an image: the detector's, the input check's, or with both (thresholds set)
    the larger of their odds (answers.Uncertainty.outside_odds)."""
    network = found.ood_scores(outputs.logits, outputs.features)
    checked = found.input_scores(outputs.statistics)
    if network is not None and checked is not None and found.ood_threshold is not None:
        return found.outside_odds(network, len(outputs), checked)
    return network if network is not None else checked


def flags_of(found: Uncertainty, outputs: Outputs) -> np.ndarray:
    flags = found.outside(found.ood_scores(outputs.logits, outputs.features), found.input_scores(outputs.statistics))
    return flags if flags is not None else np.zeros(len(outputs), dtype=bool)


def auroc_interval(auc: float, positives: int, negatives: int, level: float = LEVEL) -> tuple[float, float]:
    """Hanley and McNeil's (1982) normal interval of an AUROC."""
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    var = (auc * (1 - auc) + (positives - 1) * (q1 - auc**2) + (negatives - 1) * (q2 - auc**2)) / (
        positives * negatives
    )
    half = float(norm.ppf(0.5 + level / 2)) * math.sqrt(max(var, 0.0))
    return max(0.0, auc - half), min(1.0, auc + half)


def rate(flags: np.ndarray, groups: np.ndarray | None = None) -> dict:
    """The share flagged with its 95% interval: Wilson's, or with near-duplicate groups (frames of one
    examination are not independent) a percentile bootstrap over the groups (2,000 resamples, seeded)."""
    flags = np.asarray(flags, bool)
    k, n = int(np.sum(flags)), len(flags)
    result = {"count": k, "n": n, "rate": k / n if n else float("nan"), "ci": wilson_interval(k, n)}
    if groups is not None and n and len(np.unique(groups)) < n:
        _, index = np.unique(np.asarray(groups), return_inverse=True)
        hits, sizes = np.bincount(index, weights=flags), np.bincount(index)
        draws = np.random.default_rng(0).integers(0, len(sizes), (2000, len(sizes)))
        rates = hits[draws].sum(axis=1) / sizes[draws].sum(axis=1)
        result |= {"ci": tuple(float(v) for v in np.percentile(rates, [2.5, 97.5])), "groups": len(sizes)}
    return result


def ood_figures(found: Uncertainty, inside: Outputs, foreign: Outputs, near: Outputs | None = None) -> dict:
    """AUROC of in-distribution (test) against foreign images, with its interval; the share of each flagged (the
    test images' with their groups as the units); with `near` (endoscopy of classes not trained on) the same for
    them."""
    scores_in, scores_out = scores_of(found, inside), scores_of(found, foreign)
    auc = auroc(scores_in, scores_out)
    extra = {}
    if near is not None and len(near):
        scores_near = scores_of(found, near)
        near_auc = auroc(scores_in, scores_near)
        extra = {
            "near_auroc": near_auc,
            "near_auroc_ci": auroc_interval(near_auc, len(scores_near), len(scores_in)),
            "near_flagged": rate(flags_of(found, near)),
        }
    return extra | {
        "auroc": auc,
        "auroc_ci": auroc_interval(auc, len(scores_out), len(scores_in)),
        "threshold": found.ood_threshold,
        "input_threshold": found.input_threshold,
        "false_alarm": rate(flags_of(found, inside), inside.groups),
        "foreign_flagged": rate(flags_of(found, foreign)),
    }


def risk_coverage(uncertain: np.ndarray, correct: np.ndarray) -> dict:
    """Error among the answered images against the share answered, most certain first; AURC is the mean risk over
    every coverage (Geifman et al. 2019)."""
    order = np.argsort(uncertain, kind="stable")
    errors = np.cumsum(~correct[order])
    answered = np.arange(1, len(order) + 1)
    risk = errors / answered
    return {"coverage": answered / len(order), "risk": risk, "aurc": float(risk.mean())}


def detector_name(found: Uncertainty) -> str:
    return f"{found.detector} + input" if found.input_check and found.detector != "input" else found.detector


def measure(uncertainty: Uncertainty, test: Outputs, foreign: Outputs, class_names: list[str]) -> dict:
    """Every figure of the report's "I don't know" section, on the test images (and the foreign ones)."""
    probs, correct = test.probs, test.correct
    confidence = probs.max(axis=1)
    scores = scores_of(uncertainty, test)
    curves = {
        "confidence": risk_coverage(-confidence, correct),
        f"ood score ({detector_name(uncertainty)})": risk_coverage(scores, correct),
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
        "ood": {"detector": detector_name(uncertainty), "k": uncertainty.k, "stated": uncertainty.false_alarm}
        | ood_figures(uncertainty, test, foreign)
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
