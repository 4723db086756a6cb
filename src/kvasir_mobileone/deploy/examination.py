"""`kvasir predict VIDEO`: a model over a whole examination. Frames decoded and scaled by FFmpeg (deploy/video.py),
classified in batches on the bundle's runtime with the same answers as still images (deploy/predict.classify),
smoothed over time (deploy/timeline.py), written as frames.csv, segments.csv, timeline.png and summary.json (and with
--annotate, the video with its labels: deploy/annotate.py). A blank frame (no picture: deploy/video.blank) is
outside the training data whatever the detector says."""

from __future__ import annotations

import time
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
from kvasir_mobileone.deploy.video import clock, frames
from kvasir_mobileone.io import pyplot, save_figure, write_csv, write_json
from kvasir_mobileone.runs import (
    VIDEO_ANNOTATED_NAME,
    VIDEO_FRAMES_NAME,
    VIDEO_SEGMENTS_NAME,
    VIDEO_SUMMARY_NAME,
    VIDEO_TIMELINE_NAME,
)


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
    info, batches = frames(path, predictor.model_input, every, fps, batch_size)
    times, indices, probs, outside, blanks, scores, odds, answers = [], [], [], [], [], [], [], []
    uncertainty = getattr(predictor, "uncertainty", None)
    heat = [] if explainer is not None and annotate else None
    start = time.perf_counter()
    total = int(info.duration * info.fps / (every if not fps else max(1.0, info.fps / fps))) if info.duration else None
    with tqdm(total=total, desc=f"video {path.name}", unit="frame") as bar:
        for index, t, batch, blank in batches:
            p, judged = classify(predictor, batch, [path.name] * len(t), 1)
            times += list(t)
            indices += list(index)
            probs.append(p)
            outside += [j.outside is True for j in judged]
            blanks += list(blank)
            scores += [j.ood_score for j in judged]
            known = [j.ood_score for j in judged if j.ood_score is not None]
            graded = uncertainty.outside_odds(known, len(t)) if uncertainty and len(known) == len(t) else None
            odds += list(graded if graded is not None else np.zeros(len(t)))  # no detector: outside only when blank
            answers += [OUTSIDE if b else j.answer for j, b in zip(judged, blank, strict=True)]
            if heat is not None:
                heat += list(small_heatmaps(explainer.heatmaps(batch)))
            bar.update(len(t))
            seconds = time.perf_counter() - start
            bar.set_postfix(realtime=f"{(t[-1] + 1 / info.fps) / max(seconds, 1e-9):.1f}x")
    elapsed = time.perf_counter() - start
    summary = {
        "video": str(path),
        "fps": info.fps,
        "duration": info.duration,
        "size": [info.width, info.height],
        "codec": info.codec,
        "frames_decoded": info.decoded,
        "frames_classified": len(times),
        "stopped": info.stopped,
        "seconds": elapsed,
    }
    if not times:
        return summary
    times, probs, outside, blanks = np.array(times), np.concatenate(probs), np.array(outside), np.array(blanks)
    odds = np.array(odds)
    smoothed = smooth(probs, odds, times, stay, min_segment, blanks, ood_weight)
    states = [*names, OUTSIDE_STATE]
    top = probs.argmax(axis=1)
    raw = np.where(outside | blanks, len(names), top)
    rows = [
        [
            f"{t:.3f}",
            i,
            *np.round(p, 6),
            names[k],
            OUTSIDE if o or b else "",
            "yes" if b else "",
            s if s is not None else "",
            f"{d:.4g}",
            a,
            states[live],
            states[off],
        ]
        for t, i, p, k, o, b, s, d, a, live, off in zip(
            times,
            indices,
            probs,
            top,
            outside,
            blanks,
            scores,
            odds,
            answers,
            smoothed["live"],
            smoothed["offline"],
            strict=True,
        )
    ]
    out_dir.mkdir(parents=True, exist_ok=True)
    header = ["time", "frame", *[f"p_{c}" for c in names], "top", "outside", "blank", "ood_score", "ood_odds", "answer"]
    header += ["live", "smoothed"]
    write_csv(out_dir / VIDEO_FRAMES_NAME, header, rows)
    found = segments(smoothed["offline"], times, probs, outside | blanks, names, smoothed["frame_seconds"])
    write_csv(
        out_dir / VIDEO_SEGMENTS_NAME,
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
    plot_timeline(times, probs, smoothed["offline"], names, out_dir / VIDEO_TIMELINE_NAME, path.name)
    video_seconds = float(times[-1] + smoothed["frame_seconds"])
    summary |= {
        "segments": len(found),
        "blank_frames": int(blanks.sum()),
        "flagged_frames": int(outside.sum()),
        "switches_raw": switches(raw),
        "switches_smoothed": switches(smoothed["offline"]),
        "realtime_factor": video_seconds / elapsed,
        "stay_per_second": stay,
        "min_segment": min_segment,
        "ood_weight": ood_weight,
    }
    if annotate:
        colours = [tuple(int(255 * c) for c in class_colour(k, len(names))) for k in range(len(names))]
        colours.append((110, 110, 110))  # the outside state: grey on the black band
        labels = [states[k] for k in smoothed["offline"]]
        captions = [f"frame: {a} {p.max():.2f}" for a, p in zip(answers, probs, strict=True)]
        annotate_video(
            path,
            out_dir / VIDEO_ANNOTATED_NAME,
            np.array(indices),
            labels,
            captions,
            [colours[k] for k in smoothed["offline"]],
            heat,
        )
        summary["annotated"] = VIDEO_ANNOTATED_NAME
    write_json(out_dir / VIDEO_SUMMARY_NAME, summary)
    return summary


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


def class_colour(k: int, classes: int) -> tuple[float, float, float]:
    """RGB in [0, 1] of class k in the timeline and the annotated video; the outside state (k == classes) black."""
    if k == classes:
        return (0.0, 0.0, 0.0)
    return tuple(pyplot().get_cmap("tab10" if classes <= 10 else "tab20")(k)[:3])
