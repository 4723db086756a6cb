"""How a video's timeline (`kvasir predict VIDEO`) compares with a ground truth of segments (`kvasir synth --video
true` writes one): boundaries found within a tolerance, frame accuracy of the smoothed labels against the raw
per-frame answer (top class, or outside when flagged or blank) with a paired interval — over every frame, the gaps
between segments included (their truth is the outside state) —, and how much less often the label switches than
raw, beside the truth's own switches (no smoothing can go below them)."""

from __future__ import annotations

import numpy as np

from kvasir_mobileone.data.synth_video import GAP
from kvasir_mobileone.evaluation.stats import matched_pairs_interval, wilson_interval
from kvasir_mobileone.io import read_csv


def truth_at(truth: list[dict], times: np.ndarray) -> np.ndarray:
    """The truth's label of each time (GAP between segments)."""
    labels = np.full(len(times), GAP, dtype=object)
    for row in truth:
        inside = (times >= float(row["start"]) - 1e-6) & (times < float(row["end"]) - 1e-6)
        labels[inside] = row["label"]
    return labels


def boundaries(labels: np.ndarray, times: np.ndarray, step: float) -> list[float]:
    """Where one class gives way to another, ignoring the gaps (the middle of a gap between them)."""
    found, last, last_end = [], None, None
    for i, label in enumerate(labels):
        if label == GAP:
            continue
        if last is not None and label != last:
            start = times[i]
            found.append((last_end + step + start) / 2 if start - last_end > step * 1.5 else start)
        last, last_end = label, times[i]
    return found


def compare_timeline(frames_csv, truth_csv, tolerance: float = 0.5) -> dict:
    """Figures of a frames.csv against its truth CSV."""
    rows, truth = read_csv(frames_csv), read_csv(truth_csv)
    times = np.array([float(r["time"]) for r in rows])
    step = float(np.median(np.diff(times))) if len(times) > 1 else 1.0
    expected = truth_at(truth, times)
    smoothed = np.array([r["smoothed"] for r in rows], dtype=object)
    raw = np.array([r["outside"] or r["top"] for r in rows], dtype=object)
    raw = np.where(raw == "outside the training data", GAP, raw)
    smoothed = np.where(smoothed == "outside the training data", GAP, smoothed)
    truth_bounds = boundaries(expected, times, step)
    found = boundaries(smoothed, times, step)
    errors = [min((abs(b - f) for f in found), default=float("inf")) for b in truth_bounds]
    within = int(sum(e <= tolerance for e in errors))
    right_s, right_r = smoothed == expected, raw == expected
    n = len(expected)
    only_s, only_r = int((right_s & ~right_r).sum()), int((right_r & ~right_s).sum())
    return {
        "boundaries": len(truth_bounds),
        "boundaries_found": within,
        "boundaries_within_ci": wilson_interval(within, len(truth_bounds)),
        "boundary_errors": errors,
        "frames": n,
        "accuracy_smoothed": float(right_s.mean()),
        "accuracy_raw": float(right_r.mean()),
        "only_smoothed_right": only_s,
        "only_raw_right": only_r,
        "accuracy_difference": (only_s - only_r) / n,
        "accuracy_difference_ci": matched_pairs_interval(only_s, only_r, n),
        "switches_raw": int(np.count_nonzero(raw[1:] != raw[:-1])),
        "switches_smoothed": int(np.count_nonzero(smoothed[1:] != smoothed[:-1])),
        "switches_truth": int(np.count_nonzero(expected[1:] != expected[:-1])),
    }


def follow_lags(labels, times: np.ndarray, truth: list[dict]) -> list[dict]:
    """How long a label takes to follow each true change (every truth row after the first, the gaps and the photo
    included: their truth is the outside state): the time from the row's start to the first frame inside it that
    carries its label (None when none does: the change was missed), and the row's duration."""
    labels = np.asarray(labels, dtype=object)  # the outside state is named as the truth names it (GAP)
    times = np.asarray(times, np.float64)
    out = []
    for row in truth[1:]:
        start, end = float(row["start"]), float(row["end"])
        inside = np.flatnonzero((times >= start - 1e-6) & (times < end - 1e-6))
        hits = inside[labels[inside] == row["label"]]
        lag = float(times[hits[0]] - start) if len(hits) else None
        out.append({"label": row["label"], "start": start, "duration": end - start, "lag": lag})
    return out
