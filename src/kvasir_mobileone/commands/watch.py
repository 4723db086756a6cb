"""`kvasir watch`: classify a live examination as it comes (a capture device, a network stream, or a file played at
its own pace), printing the smoothed answer each time it changes, and a summary at the end."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from kvasir_mobileone.deploy.live import LIVE_STAY, OPEN_S, STALL_S
from kvasir_mobileone.deploy.live import watch as watch_live
from kvasir_mobileone.deploy.runtime import load
from kvasir_mobileone.deploy.timeline import OOD_WEIGHT, check_smoothing
from kvasir_mobileone.deploy.video import VideoError, model_threads
from kvasir_mobileone.errors import UserError


def watch(
    source: str,
    model: str = "bundle",
    out: str = "watch",
    stay: float = LIVE_STAY,
    ood_weight: float = OOD_WEIGHT,
    seconds: float | None = None,
    stall_s: float = STALL_S,
    open_s: float = OPEN_S,
    precision: Literal["auto", "fp32", "int8"] = "auto",
    runtime: Literal["onnxruntime", "executorch", "coreml"] = "onnxruntime",
    annotate_to: str | None = None,
) -> dict:
    """Classify a live examination frame by frame as it comes, from a capture device, a stream or a paced file.

    SOURCE is a capture device (/dev/videoN: a capture card is one), a network stream (udp://HOST:PORT, rtsp://...,
    srt://...) or a video file, played at its own pace (a rehearsal). A frame that arrives while the model is busy
    is skipped and counted, never queued. The answer is smoothed causally (the forward filter of `predict VIDEO`'s
    HMM: --stay, 0.9 a second here for a shorter lag, and --ood_weight; no picture and outside the training data
    included) and printed each time it changes, with the frame's latency (arrival to answer). --out DIR gets
    frames.csv (a row per classified frame, as it comes), segments.csv (rewritten as each segment closes) and
    summary.json. It ends when the stream ends, when no frame comes for --stall_s seconds (a source that sends
    nothing for --open_s cannot be opened), after --seconds, or with Ctrl-C, and prints the summary: frames seen,
    classified and skipped, latency p50/p95/max, segments. --annotate_to sends each classified frame on with the
    live answer drawn over it (360 px high, H.264): to a stream (udp://HOST:PORT, srt://...: MPEG-TS, for a
    player such as ffplay or VLC on the screen beside the tower) or a .ts/.mp4/.mkv file, without ever making the
    model wait for the encoder."""
    check_smoothing(stay, 0.0, ood_weight)
    if stall_s <= 0:
        raise UserError(f"--stall_s is how long a silent stream is waited for, in seconds: above 0, not {stall_s}.")
    predictor = load(model, precision, runtime, model_threads())
    try:
        summary = watch_live(
            predictor, source, Path(out), stay, ood_weight, seconds, stall_s, print, open_s, annotate_to, ctrl_c=True
        )
    except VideoError as err:
        raise UserError(str(err)) from err
    latency = summary["latency_ms"]
    timing = (
        f"latency p50 {latency['p50']:.1f} ms, p95 {latency['p95']:.1f} ms, max {latency['max']:.1f} ms"
        if summary["frames_classified"]
        else "no frame classified"
    )
    print(
        f"{source}: {summary['stopped']}. {summary['frames_seen']} frames seen, {summary['frames_classified']} "
        f"classified, {summary['frames_skipped']} skipped (arrived while the model was busy); {timing}; "
        f"{summary['segments']} segments. Written to {out}/ (frames.csv, segments.csv, summary.json)"
    )
    shown = summary["annotated"]
    if shown:
        problem = f"; it broke off ({shown['error']}): {shown['not_sent']} not sent" if shown["error"] else ""
        print(
            f"Annotated: {shown['frames']} frames sent to {shown['to']}, {shown['skipped']} skipped (arrived while "
            f"the encoder was busy){problem}"
        )
    return summary
