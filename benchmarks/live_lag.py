"""How fast the live label (`kvasir watch`: the HMM's forward filter) follows a true change, beside the offline
timeline's (Viterbi, then --min_segment), for each --stay, on synthetic examinations: synthesizes N videos (as
benchmarks/video_smoothing.py does, the same folders), classifies each once with the bundle, then replays the same
per-frame answers through the live path's own filter (deploy/live.LiveState) with every setting, on every frame and
on one frame in 3 (a model that keeps up with a third of a 25 fps feed). The lag of a change is the time from its
start to the first frame inside it that carries its label; a change whose frames never carry it is missed. What
chose watch's default --stay (deploy/live.LIVE_STAY).

    python benchmarks/live_lag.py --model BUNDLE [--videos 6] [--out DIR]
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from video_smoothing import arguments, watched_videos

from kvasir_mobileone.data.synth_video import GAP
from kvasir_mobileone.deploy.live import LIVE_STAY, LiveState
from kvasir_mobileone.deploy.timeline import MIN_SEGMENT, OOD_WEIGHT, OUTSIDE_STATE, smooth
from kvasir_mobileone.evaluation.examination import follow_lags, truth_at
from kvasir_mobileone.io import markdown_table, read_csv

STAYS = (0.5, 0.9, 0.99, 0.999)
EVERY = (1, 3)


def per_frame(frames_csv: Path) -> dict:
    rows = read_csv(frames_csv)
    names = [k.removeprefix("p_") for k in rows[0] if k.startswith("p_")]
    return {
        "names": names,
        "probs": np.array([[float(r[f"p_{c}"]) for c in names] for r in rows]),
        "blank": np.array([r["blank"] != "" for r in rows]),
        "odds": np.array([float(r["ood_odds"]) for r in rows]),
        "times": np.array([float(r["time"]) for r in rows]),
    }


def live_labels(f: dict, stay: float, every: int) -> tuple[np.ndarray, np.ndarray]:
    """The live path's labels of one frame in `every` (LiveState over the real times between them)."""
    state = LiveState(f["names"], stay, OOD_WEIGHT)
    keep = np.arange(0, len(f["times"]), every)
    labels = [state.label(state.update(f["probs"][i], f["odds"][i], f["blank"][i], f["times"][i])[0]) for i in keep]
    return np.array(labels, dtype=object), f["times"][keep]


def offline_labels(f: dict, stay: float) -> np.ndarray:
    states = [*f["names"], OUTSIDE_STATE]
    labels = smooth(f["probs"], f["odds"], f["times"], stay, MIN_SEGMENT, f["blank"], OOD_WEIGHT)["offline"]
    return np.array([states[s] for s in labels], dtype=object)


def figures(lags: list[dict], labels_truth: list[tuple[np.ndarray, np.ndarray]]) -> list[str]:
    """Lags into a class and into the outside state (median, 95th percentile, max; missed), switches, accuracy."""
    cells = []
    for into_class in (True, False):
        chosen = [x for x in lags if (x["label"] != GAP) == into_class]
        found = np.array([x["lag"] for x in chosen if x["lag"] is not None])
        missed = len(chosen) - len(found)
        spread = f"{np.median(found):.2f} / {np.percentile(found, 95):.2f} / {found.max():.2f}" if len(found) else "—"
        cells += [spread, f"{missed} of {len(chosen)}"]
    switches = sum(int(np.count_nonzero(labels[1:] != labels[:-1])) for labels, _ in labels_truth)
    truth_switches = sum(int(np.count_nonzero(truth[1:] != truth[:-1])) for _, truth in labels_truth)
    right = sum(int((labels == truth).sum()) for labels, truth in labels_truth)
    total = sum(len(truth) for _, truth in labels_truth)
    return [*cells, f"{switches} ({truth_switches})", f"{right / total:.3f}"]


def run(args) -> None:
    root = Path(args.out or tempfile.mkdtemp())
    videos = [(per_frame(f), read_csv(t)) for f, t in watched_videos(root, args.videos, args.model)]
    table = []
    for stay in STAYS:
        for every in EVERY:
            lags, pairs = [], []
            for f, truth in videos:
                labels, times = live_labels(f, stay, every)
                lags += follow_lags(labels, times, truth)
                pairs.append((labels, truth_at(truth, times)))
            table.append([f"{stay:g}", f"live, 1 frame in {every}", *figures(lags, pairs)])
        lags, pairs = [], []
        for f, truth in videos:
            labels = offline_labels(f, stay)
            lags += follow_lags(labels, f["times"], truth)
            pairs.append((labels, truth_at(truth, f["times"])))
        table.append([f"{stay:g}", "offline (Viterbi, --min_segment 0.5)", *figures(lags, pairs)])
    headers = ["--stay", "labels", "lag into a class (s): median / p95 / max", "missed"]
    headers += ["lag into outside (s)", "missed", "switches (truth)", "frame accuracy"]
    print(markdown_table(headers, table))
    print(f"\nwatch's default --stay: {LIVE_STAY} ({args.videos} videos, {args.model}).")


if __name__ == "__main__":
    run(arguments(__doc__))
