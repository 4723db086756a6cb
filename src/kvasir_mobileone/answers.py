"""What a model answers for one image besides its class: an out-of-distribution score and flag ("outside the
training data"), a prediction set with a coverage guarantee ("polyps or ulcerative-colitis"), and abstention ("not
sure") — the rules, numpy only, shared by the test report, `predict` on every runtime, the page and the card.

`Uncertainty` is fitted on a run's training features and calibrated on its val images (evaluation/uncertainty.py);
it travels in the checkpoint and in a bundle (metadata.json "uncertainty" plus the arrays in uncertainty.npz).
Every rule reads softmax(logits) at temperature 1 without flip TTA: what it was calibrated on.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from kvasir_mobileone.errors import UserError

# out-of-distribution scores, higher = less like the training images:
#   energy: -logsumexp(logits) (Liu et al. 2020);
#   mahalanobis: the smallest Mahalanobis distance to a class mean under the shared (Ledoit-Wolf) covariance of the
#     training features (Lee et al. 2018);
#   knn: 1 - cosine similarity to the k-th nearest training feature, features L2-normalized (Sun et al. 2022).
DETECTORS = ("energy", "mahalanobis", "knn")
# auto: the detector with the highest AUROC of the val images against images that are not endoscopy (crops and noise
# of another seed than the report's), measured at fit time: which one wins depends on the network (benchmarks/ood.py:
# energy for MobileOne-S0 from scratch, Mahalanobis for a ResNet, on the same synthetic classes)
AUTO = "auto"
OUTSIDE, NOT_SURE = "outside the training data", "not sure"
VERSION = 1


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, in the logits' own dtype."""
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def energy_score(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    top = z.max(axis=1)
    return -(top + np.log(np.exp(z - top[:, None]).sum(axis=1)))


def mahalanobis_score(features: np.ndarray, means: np.ndarray, precision: np.ndarray) -> np.ndarray:
    f, mu, p = (np.asarray(a, np.float64) for a in (features, means, precision))
    fp = f @ p
    distances = (fp * f).sum(axis=1)[:, None] - 2 * fp @ mu.T + ((mu @ p) * mu).sum(axis=1)[None, :]
    return distances.min(axis=1)


def normalized(features: np.ndarray) -> np.ndarray:
    f = np.asarray(features, np.float64)
    return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)


def knn_score(features: np.ndarray, bank: np.ndarray, k: int) -> np.ndarray:
    """1 - the k-th largest cosine similarity to the (already normalized) training bank."""
    similarity = normalized(features) @ np.asarray(bank, np.float64).T
    k = min(int(k), similarity.shape[1])
    return 1.0 - np.partition(similarity, -k, axis=1)[:, -k]


def aps_scores(probs: np.ndarray) -> np.ndarray:
    """Adaptive prediction sets (Romano et al. 2020) without randomization (their U = 0): a class's score is the
    probability mass of the classes more likely than it (N x classes). The top class scores 0, so a confident model
    gets sets of one; any such score keeps split-conformal coverage (the inclusive form, U = 1, pads sets with
    classes of no probability when the model is confident)."""
    p = np.asarray(probs, np.float64)
    order = np.argsort(-p, axis=1, kind="stable")
    ranked = np.take_along_axis(p, order, axis=1)
    before = np.cumsum(ranked, axis=1) - ranked
    scores = np.empty_like(p)
    np.put_along_axis(scores, order, before, axis=1)
    return scores


def prediction_sets(probs: np.ndarray, qhat: float | None) -> list[list[int]]:
    """Each image's set: the classes whose APS score is at most qhat, most likely first (the top class is always
    in). qhat None: every class (too few calibration images)."""
    p = np.asarray(probs, np.float64)
    scores = aps_scores(p)
    sets = []
    for row, s in zip(p, scores, strict=True):
        order = np.argsort(-row, kind="stable")
        sets.append([int(c) for c in order if qhat is None or s[c] <= qhat])
    return sets


@dataclass(frozen=True)
class Uncertainty:
    """A fitted detector with its threshold, the abstention threshold and the conformal quantile.

    ood_threshold None: too few val images to set it at `false_alarm` (nothing is flagged); confidence_threshold
    None: no threshold met `target_error` on val (the model never abstains by it); qhat None: too few val images for
    `coverage` (every set holds every class)."""

    detector: str
    false_alarm: float
    ood_threshold: float | None
    target_error: float
    confidence_threshold: float | None
    coverage: float
    qhat: float | None
    k: int = 0  # knn's neighbour rank
    arrays: dict[str, np.ndarray] = field(default_factory=dict)  # mahalanobis: means, precision; knn: bank
    fitted: dict = field(default_factory=dict)  # how it was fitted and what val measured (plain data)

    def ood_scores(self, logits: np.ndarray, features: np.ndarray | None) -> np.ndarray | None:
        """Each image's score (None when the detector needs features and the runtime gives none)."""
        if self.detector == "energy":
            return energy_score(logits)
        if features is None:
            return None
        if self.detector == "mahalanobis":
            return mahalanobis_score(features, self.arrays["means"], self.arrays["precision"])
        return knn_score(features, self.arrays["bank"], self.k)

    def outside(self, scores: np.ndarray) -> np.ndarray:
        if self.ood_threshold is None:
            return np.zeros(len(scores), dtype=bool)
        return np.asarray(scores) > self.ood_threshold

    def outside_odds(self, scores: np.ndarray | None, count: int) -> np.ndarray:
        """Graded evidence (the video timeline's): the odds that each image is outside the training data, 1 at
        the threshold and growing with the score — score / threshold for the distances (Mahalanobis, kNN),
        exp(score - threshold) for energy (a ratio of the logits' partition functions). All 1 (no evidence
        either way) without a threshold or scores."""
        if scores is None or self.ood_threshold is None:
            return np.ones(count)
        scores = np.asarray(scores, np.float64)
        if self.detector == "energy":
            return np.exp(np.clip(scores - self.ood_threshold, -50, 50))
        return np.maximum(scores, 1e-12) / max(self.ood_threshold, 1e-12)

    def judge(self, logits: np.ndarray, features: np.ndarray | None, class_names: list[str]) -> list[dict]:
        """Per image: answer (the top class, NOT_SURE, or OUTSIDE), ood_score, outside, not_sure and the prediction
        set as class names joined by " or "."""
        probs = softmax(np.asarray(logits, np.float64))
        scores = self.ood_scores(logits, features)
        flags = self.outside(scores) if scores is not None else np.zeros(len(probs), dtype=bool)
        sets = prediction_sets(probs, self.qhat)
        out = []
        for i, p in enumerate(probs):
            unsure = self.confidence_threshold is not None and float(p.max()) < self.confidence_threshold
            top = class_names[int(p.argmax())]
            out.append(
                {
                    "answer": OUTSIDE if flags[i] else NOT_SURE if unsure else top,
                    "ood_score": None if scores is None else round(float(scores[i]), 6),
                    "outside": bool(flags[i]) if scores is not None else None,
                    "not_sure": bool(unsure),
                    "prediction_set": " or ".join(class_names[c] for c in sets[i]),
                }
            )
        return out

    def plain(self) -> dict:
        """Everything but the arrays (metadata.json's "uncertainty", the checkpoint's plain part)."""
        return {"version": VERSION} | {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "arrays"
        }

    @classmethod
    def from_parts(cls, plain: dict, arrays: dict) -> Uncertainty:
        if plain.get("version") != VERSION:
            raise ValueError(f"uncertainty version {plain.get('version')} is not {VERSION}: export the run again.")
        names = {f.name for f in dataclasses.fields(cls)} - {"arrays"}
        return cls(
            **{k: v for k, v in plain.items() if k in names}, arrays={k: np.asarray(v) for k, v in arrays.items()}
        )


@dataclass(frozen=True)
class UncertaintyConfig:
    """`--uncertainty.*` of fit and test: the detector, the false-alarm rate its threshold is set to on val images,
    the error rate abstention aims for among the images answered, the prediction sets' coverage, and how many
    training images (a stratified, seeded sample) the detector is fitted on."""

    detector: str = AUTO
    ood_false_alarm: float = 0.05
    target_error: float = 0.05
    coverage: float = 0.9
    confidence: float = 0.95  # the one-sided level of the abstention threshold's binomial bound
    fit_images: int = 2000

    def __post_init__(self):
        if self.detector not in (AUTO, *DETECTORS):
            raise UserError(f"--uncertainty.detector {self.detector!r}: choose auto or one of {', '.join(DETECTORS)}.")
        for name in ("ood_false_alarm", "target_error", "coverage", "confidence"):
            if not 0 < getattr(self, name) < 1:
                raise UserError(f"--uncertainty.{name} {getattr(self, name)}: give a rate between 0 and 1.")
