"""An examination's timeline from per-frame answers: a hidden Markov model over the classes plus one state for
frames outside the training data (blank: black or flushed, no picture; foreign: not forced into a class), with
parameters a user can reason about — the chance of staying in the same state over one second (--stay), how much
the out-of-distribution detector's score counts (--ood_weight) —, forward filtering for the live (causal) answer
and Viterbi for the offline one, then segments shorter than --min_segment seconds merged into their neighbours.
numpy only."""

from __future__ import annotations

import numpy as np

from kvasir_mobileone.errors import UserError

OUTSIDE_STATE = "outside the training data"
FLOOR = 1e-3  # the emission every state keeps, so that one frame can never make a state impossible


STAY, MIN_SEGMENT, OOD_WEIGHT = 0.99, 0.5, 0.5  # the defaults benchmarks/video_smoothing.py chose


def check_smoothing(stay: float, min_segment: float, ood_weight: float) -> None:
    """The settings' ranges, said before a video is decoded."""
    if not 0 < stay < 1:
        raise UserError(f"--stay is the chance of keeping a state over one second: in (0, 1), not {stay}.")
    if min_segment < 0:
        raise UserError(f"--min_segment is in seconds: 0 or more, not {min_segment}.")
    if not 0 <= ood_weight <= 10:
        raise UserError(f"--ood_weight is an exponent in [0, 10] (0 ignores the detector), not {ood_weight}.")


def emissions(
    probs: np.ndarray, odds: np.ndarray, blank: np.ndarray | None = None, ood_weight: float = OOD_WEIGHT
) -> np.ndarray:
    """T x (classes + 1). A frame is outside with chance q, whose odds are the detector's (answers.Uncertainty.
    outside_odds: 1 at its threshold) to the power `ood_weight` — all but certainly when it is blank (no picture) —,
    and in the outside state its class probabilities say nothing (uniform): emission(class c) = (1 - q) p_c,
    emission(outside) = q / classes. So a score far past the threshold outweighs a sure class, one just past it only
    an unsure class, and ood_weight 0 ignores the detector. Odds of 0 (a model without a detector) make a frame
    outside only when it is blank."""
    probs = np.asarray(probs, np.float64)
    t, k = probs.shape
    odds = np.asarray(odds, np.float64)
    powered = np.where(odds > 0, np.maximum(odds, 1e-300) ** ood_weight, 0.0)
    q = powered / (1 + powered)
    if blank is not None:
        q = np.where(np.asarray(blank, bool), 1 - FLOOR, q)
    e = np.empty((t, k + 1))
    e[:, :k] = (probs * (1 - FLOOR) + FLOOR / k) * (1 - q)[:, None]
    e[:, k] = q / k
    return e / e.sum(axis=1, keepdims=True)


def transitions(states: int, stay_per_second: float, frames_per_second: float) -> np.ndarray:
    """The per-frame transition matrix: stay with stay_per_second ** (1 / fps), else any other state alike."""
    stay = stay_per_second ** (1 / max(frames_per_second, 1e-9))
    matrix = np.full((states, states), (1 - stay) / max(states - 1, 1))
    np.fill_diagonal(matrix, stay)
    return matrix


def forward(e: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Filtered posteriors P(state at t | frames up to t): what a live view can show (causal)."""
    out = np.empty_like(e)
    belief = np.full(e.shape[1], 1 / e.shape[1])
    for t in range(len(e)):
        belief = (belief @ matrix) * e[t]
        belief /= belief.sum()
        out[t] = belief
    return out


def viterbi(e: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """The most likely state sequence given every frame (offline)."""
    log_e, log_m = np.log(e), np.log(matrix)
    score = np.log(1 / e.shape[1]) + log_e[0]
    back = np.zeros(e.shape, dtype=np.int64)
    for t in range(1, len(e)):
        candidates = score[:, None] + log_m
        back[t] = candidates.argmax(axis=0)
        score = candidates.max(axis=0) + log_e[t]
    path = np.empty(len(e), dtype=np.int64)
    path[-1] = int(score.argmax())
    for t in range(len(e) - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    return path


def runs(labels: np.ndarray) -> list[tuple[int, int, int]]:
    """(state, first index, last index) of each run of equal labels."""
    labels = np.asarray(labels)
    if not len(labels):
        return []
    edges = np.flatnonzero(np.diff(labels)) + 1
    starts, ends = np.r_[0, edges], np.r_[edges - 1, len(labels) - 1]
    return [(int(labels[s]), int(s), int(e)) for s, e in zip(starts, ends, strict=True)]


def merge_short(labels: np.ndarray, times: np.ndarray, min_seconds: float, frame_seconds: float) -> np.ndarray:
    """Runs shorter than min_seconds take the label of the longer neighbour (the shortest run first, until none is
    left or one run remains)."""
    labels = np.array(labels)
    while True:
        found = runs(labels)
        lengths = [times[e] - times[s] + frame_seconds for _, s, e in found]
        short = [i for i, d in enumerate(lengths) if d < min_seconds]
        if not short or len(found) == 1:
            return labels
        i = min(short, key=lambda j: lengths[j])
        neighbours = [j for j in (i - 1, i + 1) if 0 <= j < len(found)]
        j = max(neighbours, key=lambda n: lengths[n])
        _, s, e = found[i]
        labels[s : e + 1] = found[j][0]


def smooth(
    probs: np.ndarray,
    odds: np.ndarray,
    times: np.ndarray,
    stay_per_second: float = STAY,
    min_segment: float = MIN_SEGMENT,
    blank: np.ndarray | None = None,
    ood_weight: float = OOD_WEIGHT,
) -> dict:
    """{filtered: T x S causal posteriors, live: their argmax, offline: Viterbi then min_segment}. The analysed
    frame rate is read from the times."""
    check_smoothing(stay_per_second, min_segment, ood_weight)
    times = np.asarray(times, np.float64)
    frame_seconds = float(np.median(np.diff(times))) if len(times) > 1 else 1.0
    e = emissions(probs, odds, blank, ood_weight)
    matrix = transitions(e.shape[1], stay_per_second, 1 / frame_seconds)
    filtered = forward(e, matrix)
    offline = merge_short(viterbi(e, matrix), times, min_segment, frame_seconds) if len(e) else np.zeros(0, int)
    return {"filtered": filtered, "live": filtered.argmax(axis=1), "offline": offline, "frame_seconds": frame_seconds}


def segments(
    labels: np.ndarray,
    times: np.ndarray,
    probs: np.ndarray,
    outside: np.ndarray,
    names: list[str],
    frame_seconds: float,
) -> list[dict]:
    """One row per run of the smoothed labels: state, start, end, duration, frames, and the mean probability of that
    class over its frames (for the outside state: the share of its frames that are blank or the detector flagged)."""
    rows = []
    states = [*names, OUTSIDE_STATE]
    for state, s, e in runs(labels):
        inside = slice(s, e + 1)
        mean = float(np.mean(outside[inside])) if state == len(names) else float(np.mean(probs[inside, state]))
        rows.append(
            {
                "state": states[state],
                "start": float(times[s]),
                "end": float(times[e] + frame_seconds),
                "duration": float(times[e] + frame_seconds - times[s]),
                "frames": e - s + 1,
                "mean_probability": round(mean, 4),
            }
        )
    return rows


def switches(labels: np.ndarray) -> int:
    return int(np.count_nonzero(np.diff(np.asarray(labels))))
