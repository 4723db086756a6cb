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
from pathlib import Path

import numpy as np

from kvasir_mobileone.errors import UserError

# out-of-distribution scores, higher = less like the training images:
#   energy: -logsumexp(logits) (Liu et al. 2020);
#   mahalanobis: the smallest Mahalanobis distance to a class mean under the shared (Ledoit-Wolf) covariance of the
#     training features (Lee et al. 2018);
#   relative_mahalanobis: that distance less the distance to the training features' own mean and covariance (Ren et
#     al. 2021: what every image shares, the background, taken out);
#   knn: 1 - cosine similarity to the k-th nearest training feature, features L2-normalized (Sun et al. 2022);
#   vim: virtual-logit matching (Wang et al. 2022): the feature's norm off the training features' principal subspace,
#     scaled to the logits, plus energy;
#   react: energy of the logits recomputed from features clipped at their training 90th percentile (Sun et al. 2021);
#   input: the Mahalanobis distance of the image's own colour and texture statistics (input_statistics) to the
#     training images': it does not depend on what the classes taught the network.
NETWORK_DETECTORS = ("energy", "mahalanobis", "relative_mahalanobis", "knn", "vim", "react")
DETECTORS = (*NETWORK_DETECTORS, "input")
HEAD_DETECTORS = ("vim", "react")  # need the classifier head's weights (fit_detector's `head`)
# detectors whose scores are log-likelihood-like differences (they can be negative): their odds are exp(scale x
# (score - threshold)) — the energies' a ratio of partition functions, relative Mahalanobis' half a difference of
# squared distances (a log density ratio); the others' are distances, their odds score / threshold
ADDITIVE = {
    "energy": 1.0,
    "vim": 1.0,
    "react": 1.0,
    "relative_mahalanobis": 0.5,
}
# auto: the network detector with the highest AUROC of the val images against the selection set of images that are
# not endoscopy (data/foreign.py: other sources than the report's), measured at fit time; with the input check on
# (the default), an image is flagged when either detector flags it, each at half the false-alarm rate.
AUTO = "auto"
OUTSIDE, NOT_SURE = "outside the training data", "not sure"
VERSION = 2  # 2: the input check, the detectors beside the first three (1 is read as it was)
# A frame shows no picture (black: the scope outside the body or covered; white, grey or one colour: a flash,
# flushing, a test pattern) when, in every colour channel, the middle 90% of its visible pixels span fewer than this
# many of 256 levels: a definition, not a fitted threshold (overlays, a timestamp on a black frame, fill too few
# pixels to count). Such a frame is outside the training data whatever the model or its detector says: the one rule
# for still images, video frames, the page, the bundle and the card's snippet.
NO_PICTURE_RANGE = 16


def input_pixels(batch: np.ndarray, mean, std) -> np.ndarray:
    """N x 3 x S x S network inputs (mean/std normalized) back to N x S x S x 3 pixels on the 0-255 scale."""
    x = np.asarray(batch, np.float32).transpose(0, 2, 3, 1)
    return np.clip(np.rint((x * np.float32(std) + np.float32(mean)) * 255), 0, 255)  # the 8-bit levels read


def no_picture(batch: np.ndarray, mean, std, visible: np.ndarray | None = None) -> np.ndarray:
    """Per network input (N x 3 x S x S): whether it shows no picture inside the model's view (NO_PICTURE_RANGE),
    read on every 4th pixel of every 4th row (plenty for a percentile, and fast)."""
    pixels = input_pixels(np.asarray(batch)[:, :, ::4, ::4], mean, std)
    seen = visible[::4, ::4] if visible is not None else np.ones(pixels.shape[1:3], bool)
    inside = pixels[:, seen]  # N x M x 3
    low, high = np.percentile(inside, [5, 95], axis=1)
    return (high - low < NO_PICTURE_RANGE).all(axis=1)


INPUT_STATISTICS = (
    "mean R",
    "mean G",
    "mean B",
    "sd R",
    "sd G",
    "sd B",
    "luma p10",
    "luma p50",
    "luma p90",
    "saturation",
    "sd red-green",
    "sd yellow-blue",
    "log detail 1 px across",
    "log detail 1 px down",
    "log detail 4 px across",
    "log detail 4 px down",
)


def input_statistics(batch: np.ndarray, mean, std, visible: np.ndarray | None = None) -> np.ndarray:
    """N x 16 colour and texture statistics of network inputs (N x 3 x S x S) inside the model's view, read on
    every 2nd pixel of every 2nd row (INPUT_STATISTICS, in order): the input detector's features. Colour: each
    channel's mean and spread, brightness percentiles, saturation, the opponent colours' spread; texture: the mean
    brightness difference of neighbours 1 and 4 (sampled) pixels apart, across and down, as logs (noise is as rough
    at 1 as at 4, tissue and photos smoother close up)."""
    x = input_pixels(np.asarray(batch)[:, :, ::2, ::2], mean, std).astype(np.float64) / 255.0  # N x h x w x 3
    seen = visible[::2, ::2] if visible is not None else np.ones(x.shape[1:3], bool)
    inside = x[:, seen]  # N x M x 3
    r, g, b = inside[..., 0], inside[..., 1], inside[..., 2]
    luma = x @ np.array([0.299, 0.587, 0.114])  # N x h x w
    top, low = inside.max(axis=2), inside.min(axis=2)
    parts = [
        inside.mean(axis=1),
        inside.std(axis=1),
        np.percentile(luma[:, seen], [10, 50, 90], axis=1).T,
        ((top - low) / np.maximum(top, 1e-3)).mean(axis=1)[:, None],
        (r - g).std(axis=1)[:, None],
        ((r + g) / 2 - b).std(axis=1)[:, None],
    ]
    for step in (1, 4):
        for axis in (2, 1):  # across (columns), down (rows)
            a = [slice(None)] * 3
            z = [slice(None)] * 3
            a[axis], z[axis] = slice(step, None), slice(None, -step)
            both = seen[tuple(a[1:])] & seen[tuple(z[1:])]
            detail = np.abs(luma[tuple(a)] - luma[tuple(z)])[:, both]
            parts.append(np.log(detail.mean(axis=1) + 1e-3)[:, None] if both.any() else np.zeros((len(x), 1)))
    return np.concatenate(parts, axis=1).astype(np.float64)


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


def relative_mahalanobis_score(features, means, precision, background_mean, background_precision) -> np.ndarray:
    """The class-conditional distance less the background's (one Gaussian over every training feature)."""
    background = mahalanobis_score(features, np.asarray(background_mean)[None], background_precision)
    return mahalanobis_score(features, means, precision) - background


def head_logits(features: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    return np.asarray(features, np.float64) @ np.asarray(weight, np.float64).T + np.asarray(bias, np.float64)


def vim_score(features, logits, origin, null_space, alpha) -> np.ndarray:
    """alpha * the norm of (feature - origin) in the principal subspace's complement, plus energy."""
    residual = np.linalg.norm((np.asarray(features, np.float64) - origin) @ np.asarray(null_space, np.float64), axis=1)
    return float(np.asarray(alpha).reshape(-1)[0]) * residual + energy_score(logits)


def react_score(features, weight, bias, clip) -> np.ndarray:
    clipped = np.minimum(np.asarray(features, np.float64), float(np.asarray(clip).reshape(-1)[0]))
    return energy_score(head_logits(clipped, weight, bias))


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
    """A fitted detector with its threshold, the input check's, the abstention threshold and the conformal quantile.

    ood_threshold None: too few val images (or near-duplicate groups) to set it at `false_alarm` (the detector flags
    nothing); input_threshold None: no input check (or too few); confidence_threshold None: no threshold met
    `target_error` on val (the model never abstains by it); qhat None: too few val images for `coverage` (every set
    holds every class). With both checks, each was set at half of `false_alarm`."""

    detector: str
    false_alarm: float
    ood_threshold: float | None
    target_error: float
    confidence_threshold: float | None
    coverage: float
    qhat: float | None
    k: int = 0  # knn's neighbour rank
    arrays: dict[str, np.ndarray] = field(default_factory=dict)  # the detectors' fitted arrays (fit_detector)
    fitted: dict = field(default_factory=dict)  # how it was fitted and what val measured (plain data)
    input_threshold: float | None = None

    @property
    def input_check(self) -> bool:
        return "input_mean" in self.arrays

    def ood_scores(self, logits: np.ndarray, features: np.ndarray | None) -> np.ndarray | None:
        """Each image's score by the network detector (None when it needs features and the runtime gives none)."""
        a = self.arrays
        if self.detector == "energy":
            return energy_score(logits)
        if features is None:
            return None
        if self.detector == "mahalanobis":
            return mahalanobis_score(features, a["means"], a["precision"])
        if self.detector == "relative_mahalanobis":
            return relative_mahalanobis_score(
                features, a["means"], a["precision"], a["background_mean"], a["background_precision"]
            )
        if self.detector == "vim":
            return vim_score(features, logits, a["origin"], a["null_space"], a["alpha"])
        if self.detector == "react":
            return react_score(features, a["head_weight"], a["head_bias"], a["clip"])
        if self.detector == "input":
            return None  # the input detector alone reads input_scores
        return knn_score(features, a["bank"], self.k)

    def input_scores(self, statistics: np.ndarray | None) -> np.ndarray | None:
        """Each image's input-statistics distance to the training images' (None without the check)."""
        if statistics is None or not self.input_check:
            return None
        return mahalanobis_score(statistics, self.arrays["input_mean"][None], self.arrays["input_precision"])

    def outside(self, scores: np.ndarray | None, input_scores: np.ndarray | None = None) -> np.ndarray | None:
        """Flagged by the detector or by the input check; None when neither could score."""
        flags = None
        for s, threshold in ((scores, self.ood_threshold), (input_scores, self.input_threshold)):
            if s is None:
                continue
            hit = np.asarray(s) > threshold if threshold is not None else np.zeros(len(s), dtype=bool)
            flags = hit if flags is None else flags | hit
        return flags

    def outside_odds(self, scores: np.ndarray | None, count: int, input_scores: np.ndarray | None = None):
        """Graded evidence (the video timeline's): the odds that each image is outside the training data, 1 at
        the threshold and growing with the score — score / threshold for the distances, exp(scale x (score -
        threshold)) for the scores on an additive scale (ADDITIVE); with the input check, the larger of the two.
        All 1 (no evidence either way) without a threshold or scores."""
        found = []
        for s, threshold, scale in (
            (scores, self.ood_threshold, ADDITIVE.get(self.detector)),
            (input_scores, self.input_threshold, None),
        ):
            if s is not None and threshold is not None:
                s = np.asarray(s, np.float64)
                found.append(
                    np.exp(np.clip(scale * (s - threshold), -50, 50))
                    if scale
                    else np.maximum(s, 1e-12) / max(threshold, 1e-12)
                )
        return np.maximum.reduce(found) if found else np.ones(count)

    def judge(
        self, logits: np.ndarray, features: np.ndarray | None, class_names: list[str], statistics=None
    ) -> list[dict]:
        """Per image: answer (the top class, NOT_SURE, or OUTSIDE), ood_score, input_score, outside, not_sure and the
        prediction set as class names joined by " or ". `statistics`: the images' input_statistics (the input
        check)."""
        probs = softmax(np.asarray(logits, np.float64))
        scores = self.ood_scores(logits, features)
        checked = self.input_scores(statistics)
        flags = self.outside(scores, checked)
        sets = prediction_sets(probs, self.qhat)
        out = []
        for i, p in enumerate(probs):
            unsure = self.confidence_threshold is not None and float(p.max()) < self.confidence_threshold
            top = class_names[int(p.argmax())]
            flagged = flags is not None and bool(flags[i])
            out.append(
                {
                    "answer": OUTSIDE if flagged else NOT_SURE if unsure else top,
                    "ood_score": None if scores is None else round(float(scores[i]), 6),
                    "input_score": None if checked is None else round(float(checked[i]), 6),
                    "outside": flagged if flags is not None else None,
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
        if plain.get("version") not in (1, VERSION):
            raise ValueError(
                f"uncertainty version {plain.get('version')} is not one this release reads (1 to {VERSION}): "
                "upgrade kvasir-mobileone, or export the run again."
            )
        names = {f.name for f in dataclasses.fields(cls)} - {"arrays"}
        return cls(
            **{k: v for k, v in plain.items() if k in names}, arrays={k: np.asarray(v) for k, v in arrays.items()}
        )


@dataclass(frozen=True)
class UncertaintyConfig:
    """`--uncertainty.*` of fit and test: the detector, the false-alarm rate its threshold is set to on val images,
    the error rate abstention aims for among the images answered, the prediction sets' coverage, and how many
    training images (a stratified, seeded sample) the detector is fitted on; input_check: the input detector beside
    the network's (an image is flagged when either flags it, each set at half the false-alarm rate); near_dir: a
    folder of endoscopy images of classes the model was not trained on (near out-of-distribution), on which the
    report measures every detector beside the images that are not endoscopy."""

    detector: str = AUTO
    ood_false_alarm: float = 0.05
    target_error: float = 0.05
    coverage: float = 0.9
    confidence: float = 0.95  # the one-sided level of the abstention threshold's binomial bound
    fit_images: int = 2000
    input_check: bool = True
    near_dir: str | None = None

    def __post_init__(self):
        if self.detector not in (AUTO, *DETECTORS):
            raise UserError(f"--uncertainty.detector {self.detector!r}: choose auto or one of {', '.join(DETECTORS)}.")
        if self.near_dir is not None and not Path(self.near_dir).is_dir():
            raise UserError(f"--uncertainty.near_dir {self.near_dir}: no such folder (give one of images).")
        for name in ("ood_false_alarm", "target_error", "coverage", "confidence"):
            if not 0 < getattr(self, name) < 1:
                raise UserError(f"--uncertainty.{name} {getattr(self, name)}: give a rate between 0 and 1.")
