"""`kvasir predict VIDEO`: a model over a whole examination. Frames decoded and scaled by FFmpeg (deploy/video.py),
classified in batches on the bundle's runtime with the same answers as still images (deploy/predict.classify),
smoothed over time (deploy/timeline.py), written as frames.csv, segments.csv and timeline.png."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from kvasir_mobileone.answers import OUTSIDE
from kvasir_mobileone.deploy.predict import classify
from kvasir_mobileone.deploy.timeline import OUTSIDE_STATE, runs, segments, smooth, switches
from kvasir_mobileone.deploy.video import clock, frames
from kvasir_mobileone.io import pyplot, save_figure, write_csv, write_json
from kvasir_mobileone.runs import VIDEO_FRAMES_NAME, VIDEO_SEGMENTS_NAME, VIDEO_SUMMARY_NAME, VIDEO_TIMELINE_NAME


def run_video(
    predictor,
    path: Path,
    out_dir: Path,
    every: int = 1,
    fps: float | None = None,
    batch_size: int = 32,
    stay: float = 0.99,
    min_segment: float = 0.5,
) -> dict:
    """Classify every kept frame, smooth, write the outputs; the summary (also summary.json)."""
    names = list(predictor.metadata["class_names"])
    info, batches = frames(path, predictor.model_input, every, fps, batch_size)
    times, indices, probs, outside, scores, answers = [], [], [], [], [], []
    start = time.perf_counter()
    total = int(info.duration * info.fps / (every if not fps else max(1.0, info.fps / fps))) if info.duration else None
    with tqdm(total=total, desc=f"video {path.name}", unit="frame") as bar:
        for index, t, batch in batches:
            p, judged = classify(predictor, batch)
            times += list(t)
            indices += list(index)
            probs.append(p)
            outside += [j["outside"] is True for j in judged]
            scores += [j["ood_score"] for j in judged]
            answers += [j["answer"] for j in judged]
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
    times, probs, outside = np.array(times), np.concatenate(probs), np.array(outside)
    smoothed = smooth(probs, outside, times, stay, min_segment)
    states = [*names, OUTSIDE_STATE]
    top = probs.argmax(axis=1)
    raw = np.where(outside, len(names), top)
    rows = [
        [
            f"{t:.3f}",
            i,
            *np.round(p, 6),
            names[k],
            OUTSIDE if o else "",
            s if s is not None else "",
            a,
            states[live],
            states[off],
        ]
        for t, i, p, k, o, s, a, live, off in zip(
            times, indices, probs, top, outside, scores, answers, smoothed["live"], smoothed["offline"], strict=True
        )
    ]
    out_dir.mkdir(parents=True, exist_ok=True)
    header = ["time", "frame", *[f"p_{c}" for c in names], "top", "outside", "ood_score", "answer", "live", "smoothed"]
    write_csv(out_dir / VIDEO_FRAMES_NAME, header, rows)
    found = segments(smoothed["offline"], times, probs, outside, names, smoothed["frame_seconds"])
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
        "switches_raw": switches(raw),
        "switches_smoothed": switches(smoothed["offline"]),
        "realtime_factor": video_seconds / elapsed,
        "stay_per_second": stay,
        "min_segment": min_segment,
    }
    write_json(out_dir / VIDEO_SUMMARY_NAME, summary)
    return summary


def plot_timeline(times, probs, labels, names, path: Path, title: str) -> Path:
    """The probabilities over time, and below them the smoothed label as a coloured band; time in mm:ss."""
    plt = pyplot()
    from matplotlib.ticker import FuncFormatter

    colours = plt.get_cmap("tab10" if len(names) < 10 else "tab20")
    fig, (ax, band) = plt.subplots(
        2, 1, figsize=(11, 4.6), sharex=True, gridspec_kw={"height_ratios": [4, 1]}, layout="constrained"
    )
    for k, name in enumerate(names):
        ax.plot(times, probs[:, k], lw=1, color=colours(k), label=name)
    ax.set_ylabel("probability")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"{title}: per-frame probabilities and the smoothed timeline")
    ax.legend(fontsize=7, ncol=min(4, len(names)), loc="upper right")
    step = float(np.median(np.diff(times))) if len(times) > 1 else 1.0
    for state, s, e in runs(labels):
        colour = "black" if state == len(names) else colours(state)
        band.broken_barh([(times[s], times[e] + step - times[s])], (0, 1), color=colour)
    band.set_yticks([])
    band.set_ylabel("label", rotation=0, ha="right", va="center")
    band.set_xlabel("time (mm:ss); black: outside the training data")
    band.xaxis.set_major_formatter(FuncFormatter(lambda x, _: clock(max(x, 0))))
    return save_figure(fig, path)
