"""`kvasir predict VIDEO`: a model over a whole examination. Frames decoded and scaled by FFmpeg (deploy/video.py),
classified in batches on the bundle's runtime with the same answers as still images (deploy/predict.classify),
smoothed over time (deploy/timeline.py), written as frames.csv, segments.csv, timeline.png and summary.json (and with
--annotate, the video with its labels: deploy/annotate.py). A blank frame (no picture: answers.no_picture) is
outside the training data whatever the detector says."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
from tqdm import tqdm

from kvasir_mobileone.answers import OUTSIDE
from kvasir_mobileone.deploy.annotate import annotate_video
from kvasir_mobileone.deploy.predict import classify
from kvasir_mobileone.deploy.timeline import (
    MIN_SEGMENT,
    OOD_WEIGHT,
    OUTSIDE_STATE,
    STAY,
    runs,
    segments,
    smooth,
    switches,
)
from kvasir_mobileone.deploy.video import VideoInfo, clock, frames
from kvasir_mobileone.io import pyplot, save_figure, write_csv, write_json
from kvasir_mobileone.runs import (
    VIDEO_ANNOTATED_NAME,
    VIDEO_FRAMES_NAME,
    VIDEO_SEGMENTS_NAME,
    VIDEO_SUMMARY_NAME,
    VIDEO_TIMELINE_NAME,
)


@dataclass
class Classified:
    """Every kept frame of a video, classified: its time (s) and index, class probabilities, the detector's flag and
    score (None without one), whether it is blank, its odds of being outside the training data, its answer; the
    small heatmaps for annotated.mp4 when asked for."""

    info: VideoInfo
    times: list[float] = field(default_factory=list)
    indices: list[int] = field(default_factory=list)
    probs: list[np.ndarray] = field(default_factory=list)
    outside: list[bool] = field(default_factory=list)
    blanks: list[bool] = field(default_factory=list)
    scores: list[float | None] = field(default_factory=list)
    odds: list[float] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)
    heat: list[np.ndarray] | None = None
    seconds: float = 0.0


@dataclass(frozen=True)
class FrameRow:
    """One row of frames.csv: the one schema of that file. Its judgement columns (answer, outside, ood_score) are
    deploy/predict.Prediction's, as a still image gets them; `outside` names the outside state, a blank frame
    included."""

    time: str
    frame: int
    probs: tuple[float, ...]  # p_<class>, one column a class
    top: str
    outside: str
    blank: str
    ood_score: float | str
    ood_odds: str
    answer: str
    live: str
    smoothed: str

    @staticmethod
    def columns(class_names: list[str]) -> list[str]:
        names = [f.name for f in fields(FrameRow)]
        at = names.index("probs")
        return names[:at] + [f"p_{c}" for c in class_names] + names[at + 1 :]

    def cells(self) -> list:
        values = [getattr(self, f.name) for f in fields(self)]
        at = [f.name for f in fields(self)].index("probs")
        return values[:at] + list(self.probs) + values[at + 1 :]


def run_video(
    predictor,
    path: Path,
    out_dir: Path,
    every: int = 1,
    fps: float | None = None,
    batch_size: int = 32,
    stay: float = STAY,
    min_segment: float = MIN_SEGMENT,
    ood_weight: float = OOD_WEIGHT,
    annotate: bool = False,
    explainer=None,
) -> dict:
    """Classify every kept frame, smooth, write the outputs; the summary (also summary.json). With an `explainer`
    (deploy/explain.Explainer) and `annotate`, each frame of annotated.mp4 carries the Grad-CAM heatmap of the last
    classified frame (kept at HEAT_SIDE px, so that a long video's maps fit in memory)."""
    names = list(predictor.class_names)
    found = classify_frames(predictor, path, every, fps, batch_size, explainer if annotate else None)
    info = found.info
    summary = {
        "video": str(path),
        "fps": info.fps,
        "duration": info.duration,
        "size": [info.width, info.height],
        "codec": info.codec,
        "frames_decoded": info.decoded,
        "frames_classified": len(found.times),
        "stopped": info.stopped,
        "seconds": found.seconds,
    }
    if not found.times:
        return summary
    times, probs = np.array(found.times), np.concatenate(found.probs)
    outside, blanks, odds = np.array(found.outside), np.array(found.blanks), np.array(found.odds)
    smoothed = smooth(probs, odds, times, stay, min_segment, blanks, ood_weight)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_frames(out_dir / VIDEO_FRAMES_NAME, names, found, probs, smoothed)
    parts = segments(smoothed["offline"], times, probs, outside | blanks, names, smoothed["frame_seconds"])
    write_segments(out_dir / VIDEO_SEGMENTS_NAME, parts)
    plot_timeline(times, probs, smoothed["offline"], names, out_dir / VIDEO_TIMELINE_NAME, path.name)
    summary |= {
        "segments": len(parts),
        "blank_frames": int(blanks.sum()),
        "flagged_frames": int(outside.sum()),
        "switches_raw": switches(np.where(outside | blanks, len(names), probs.argmax(axis=1))),
        "switches_smoothed": switches(smoothed["offline"]),
        "realtime_factor": float(times[-1] + smoothed["frame_seconds"]) / found.seconds,
        "stay_per_second": stay,
        "min_segment": min_segment,
        "ood_weight": ood_weight,
    }
    if annotate:
        write_annotated(path, out_dir / VIDEO_ANNOTATED_NAME, names, found, probs, smoothed["offline"])
        summary["annotated"] = VIDEO_ANNOTATED_NAME
    write_json(out_dir / VIDEO_SUMMARY_NAME, summary)
    return summary


def classify_frames(predictor, path: Path, every: int, fps: float | None, batch_size: int, explainer) -> Classified:
    """Every kept frame through deploy/predict.classify in batches, with a progress bar that shows the speed against
    real time; a blank frame is outside whatever the detector says. `explainer`: heatmaps for annotated.mp4."""
    info, batches = frames(path, predictor.model_input, every, fps, batch_size)
    found = Classified(info, heat=[] if explainer is not None else None)
    uncertainty = getattr(predictor, "uncertainty", None)
    start = time.perf_counter()
    total = int(info.duration * info.fps / (every if not fps else max(1.0, info.fps / fps))) if info.duration else None
    with tqdm(total=total, desc=f"video {path.name}", unit="frame") as bar:
        for index, t, batch in batches:
            p, judged = classify(predictor, batch, [path.name] * len(t), 1)
            blank = [j.no_picture is True for j in judged]
            found.times += list(t)
            found.indices += list(index)
            found.probs.append(p)
            found.outside += [j.outside is True and not j.no_picture for j in judged]  # the detectors' flag
            found.blanks += list(blank)
            found.scores += [j.ood_score for j in judged]
            known, checked = (whole([getattr(j, k) for j in judged]) for k in ("ood_score", "input_score"))
            scored = uncertainty and (known is not None or checked is not None)
            graded = uncertainty.outside_odds(known, len(t), checked) if scored else None
            found.odds += list(graded if graded is not None else np.zeros(len(t)))  # no detector: only when blank
            found.answers += [j.answer for j in judged]
            if found.heat is not None:
                found.heat += list(small_heatmaps(explainer.heatmaps(batch)))
            bar.update(len(t))
            seconds = time.perf_counter() - start
            bar.set_postfix(realtime=f"{(t[-1] + 1 / info.fps) / max(seconds, 1e-9):.1f}x")
    found.seconds = time.perf_counter() - start
    return found


def whole(scores: list) -> list | None:
    """The scores when every frame of the batch has one; None otherwise (the runtime gives none)."""
    return None if any(s is None for s in scores) else scores


def write_frames(path: Path, names: list[str], found: Classified, probs: np.ndarray, smoothed: dict) -> Path:
    """frames.csv: a FrameRow per classified frame, with its live and smoothed labels."""
    states = [*names, OUTSIDE_STATE]
    rows = [
        FrameRow(
            time=f"{t:.3f}",
            frame=i,
            probs=tuple(np.round(p, 6)),
            top=names[int(p.argmax())],
            outside=OUTSIDE if o or b else "",
            blank="yes" if b else "",
            ood_score=s if s is not None else "",
            ood_odds=f"{d:.4g}",
            answer=a,
            live=states[live],
            smoothed=states[off],
        ).cells()
        for t, i, p, o, b, s, d, a, live, off in zip(
            found.times,
            found.indices,
            probs,
            found.outside,
            found.blanks,
            found.scores,
            found.odds,
            found.answers,
            smoothed["live"],
            smoothed["offline"],
            strict=True,
        )
    ]
    return write_csv(path, FrameRow.columns(names), rows)


def write_segments(path: Path, found: list[dict]) -> Path:
    """segments.csv: one row per smoothed segment, times in seconds and as clock times."""
    return write_csv(
        path,
        ["class", "start", "end", "duration", "frames", "mean_probability", "start_clock", "end_clock"],
        [
            [
                r["state"],
                f"{r['start']:.3f}",
                f"{r['end']:.3f}",
                f"{r['duration']:.3f}",
                r["frames"],
                r["mean_probability"],
                clock(r["start"]),
                clock(r["end"]),
            ]
            for r in found
        ],
    )


def write_annotated(video: Path, target: Path, names: list[str], found: Classified, probs, labels) -> Path:
    """annotated.mp4: the video with each frame's answer and the smoothed label (and, when computed, the heatmap)."""
    states, colours = [*names, OUTSIDE_STATE], band_colours(names)
    captions = [f"frame: {a} {p.max():.2f}" for a, p in zip(found.answers, probs, strict=True)]
    annotate_video(
        video,
        target,
        np.array(found.indices),
        [states[k] for k in labels],
        captions,
        [colours[k] for k in labels],
        found.heat,
    )
    return target


def plot_timeline(times, probs, labels, names, path: Path, title: str) -> Path:
    """The probabilities over time, and below them the smoothed label as a coloured band; time in mm:ss."""
    plt = pyplot()
    from matplotlib.ticker import FuncFormatter

    fig, (ax, band) = plt.subplots(
        2, 1, figsize=(11, 4.6), sharex=True, gridspec_kw={"height_ratios": [4, 1]}, layout="constrained"
    )
    for k, name in enumerate(names):
        ax.plot(times, probs[:, k], lw=1, color=class_colour(k, len(names)), label=name)
    ax.set_ylabel("probability")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"{title}: per-frame probabilities and the smoothed timeline")
    ax.legend(fontsize=7, ncol=min(4, len(names)), loc="upper right")
    step = float(np.median(np.diff(times))) if len(times) > 1 else 1.0
    for state, s, e in runs(labels):
        band.broken_barh([(times[s], times[e] + step - times[s])], (0, 1), color=class_colour(state, len(names)))
    band.set_yticks([])
    band.set_ylabel("label", rotation=0, ha="right", va="center")
    band.set_xlabel("time (mm:ss); black: outside the training data")
    band.xaxis.set_major_formatter(FuncFormatter(lambda x, _: clock(max(x, 0))))
    return save_figure(fig, path)


HEAT_SIDE = 56  # the side a frame's heatmap is kept at for annotated.mp4 (stretched back over the frame)


def small_heatmaps(maps: np.ndarray) -> np.ndarray:
    """N x S x S heatmaps in [0, 1] as N x HEAT_SIDE x HEAT_SIDE float16 (block means, or as they are if smaller)."""
    n, side = maps.shape[:2]
    if side <= HEAT_SIDE:
        return maps.astype(np.float16)
    from PIL import Image

    return np.stack(
        [np.asarray(Image.fromarray(m.astype(np.float32), mode="F").resize((HEAT_SIDE,) * 2, Image.BOX)) for m in maps]
    ).astype(np.float16)


def band_colours(names: list[str]) -> list[tuple[int, int, int]]:
    """RGB 0-255 of each class, then of the outside state (grey on the black band), for the label band drawn over a
    picture (the annotated video, the page's Live tab)."""
    return [tuple(int(255 * c) for c in class_colour(k, len(names))) for k in range(len(names))] + [(110, 110, 110)]


def class_colour(k: int, classes: int) -> tuple[float, float, float]:
    """RGB in [0, 1] of class k in the timeline and the annotated video; the outside state (k == classes) black."""
    if k == classes:
        return (0.0, 0.0, 0.0)
    return tuple(pyplot().get_cmap("tab10" if classes <= 10 else "tab20")(k)[:3])
