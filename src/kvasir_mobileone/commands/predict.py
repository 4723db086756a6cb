"""`kvasir predict`: classes (and heatmaps) for image files, folders and globs; torch-free on a bundle."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from kvasir_mobileone.answers import NOT_SURE
from kvasir_mobileone.data.folder import expand_inputs
from kvasir_mobileone.deploy.examination import run_video
from kvasir_mobileone.deploy.predict import predict_images, write_predictions
from kvasir_mobileone.deploy.runtime import load
from kvasir_mobileone.deploy.timeline import MIN_SEGMENT, OOD_WEIGHT, STAY, check_smoothing
from kvasir_mobileone.deploy.video import VideoError, is_video, model_threads
from kvasir_mobileone.errors import UserError
from kvasir_mobileone.extras import require
from kvasir_mobileone.runs import PREDICT_NAME


def predict(
    inputs: list[str],
    model: str = "bundle",
    out: str | None = None,
    top_k: int = 3,
    batch_size: int = 32,
    output_format: Literal["csv", "json"] | None = None,
    tta: bool = False,
    explain: bool = False,
    explain_dir: str = "explanations",
    precision: Literal["auto", "fp32", "int8"] = "auto",
    runtime: Literal["onnxruntime", "executorch", "coreml"] = "onnxruntime",
    every: int = 1,
    fps: float | None = None,
    stay: float = STAY,
    min_segment: float = MIN_SEGMENT,
    ood_weight: float = OOD_WEIGHT,
    annotate: bool = False,
) -> list[dict]:
    """Classify images and videos with a bundle or a run; unreadable files are listed.

    A bundle runs on onnxruntime, a run folder or checkpoint on PyTorch. Exits non-zero when not one input could
    be classified.

    Probabilities use the model's fitted temperature when it has one; --tta true averages in the flipped image.
    A bundle with an int8 model runs it unless --precision fp32. --runtime executorch runs the bundle's .pte
    programs in ExecuTorch's runtime (this imports torch); --runtime coreml its .mlpackage (macOS only).

    A video (MP4, AVI, MKV, MOV ...) is classified frame by frame (--every N keeps one frame in N, --fps F about F
    per second) and smoothed over time: an HMM whose state persists over one second with probability --stay, in
    which a frame is outside the training data with odds (its detector score over the threshold) ** --ood_weight
    (0: the detector ignored) and a blank frame (black, flushed: no picture) all but surely, and segments shorter
    than --min_segment seconds merged; --out DIR gets frames.csv, segments.csv, timeline.png and summary.json
    (DIR/<video name>/ for several videos; <video name>_video/ without --out), and with --annotate true
    annotated.mp4, the video with its labels (with --explain true as well, each frame's Grad-CAM heatmap)."""
    if explain:
        require("pytorch_grad_cam", "explain")
    check_smoothing(stay, min_segment, ood_weight)
    videos = [Path(i) for i in inputs if is_video(i) and not Path(i).is_dir()]
    stills = [i for i in inputs if Path(i) not in videos]
    predictor = load(model, precision, runtime, model_threads() if videos and not stills else None)
    class_names = predictor.class_names
    paths = expand_inputs(stills) if stills else []
    top_k = min(top_k, len(class_names))
    results = predict_images(predictor, paths, top_k, batch_size, tta)
    rows = [r.row() for r in results]
    if paths:
        _print_table(rows, top_k)
    if out and paths:
        target = Path(out) if Path(out).suffix else Path(out) / PREDICT_NAME
        write_predictions(target, results, top_k, output_format)
    smoothing = {"stay": stay, "min_segment": min_segment, "ood_weight": ood_weight, "annotate": annotate}
    if explain and annotate and videos:  # torch, only when asked for: the heatmap on every annotated frame
        from kvasir_mobileone.deploy.explain import Explainer

        smoothing["explainer"] = Explainer(predictor)
    watched = [_video(predictor, v, _video_dir(v, out, len(videos)), every, fps, batch_size, smoothing) for v in videos]
    if not any(not r.error for r in results) and not any(w.get("frames_classified") for w in watched):
        raise UserError(f"Not one of the {len(paths) + len(videos)} inputs could be classified (see above).")
    if explain and paths:  # torch, only when asked for
        from kvasir_mobileone.deploy.explain import explain_images

        written = explain_images([Path(r.path) for r in results if not r.error], predictor, Path(explain_dir))
        print(f"{len(written)} Grad-CAM images written to {explain_dir}/")
    return rows + watched


def _video_dir(video: Path, out: str | None, count: int) -> Path:
    if out and not Path(out).suffix:
        return Path(out) if count == 1 else Path(out) / video.stem
    base = Path(out).parent if out else Path(".")
    return base / f"{video.stem}_video"


def _video(predictor, video: Path, out_dir: Path, every, fps, batch_size, smoothing: dict) -> dict:
    """One video's outputs; an unreadable one is said in one line and counted, never a traceback."""
    try:
        summary = run_video(predictor, video, out_dir, every, fps, batch_size, **smoothing)
    except VideoError as err:
        print(f"UNREADABLE {err}")
        return {"video": str(video), "error": str(err), "frames_classified": 0}
    if summary["stopped"]:
        print(f"NOTE {video}: {summary['stopped']}")
    if summary["frames_classified"]:
        written = ", annotated.mp4" if summary.get("annotated") else ""
        print(
            f"{video}: {summary['frames_classified']} frames classified ({summary['fps']:.2f} fps video, "
            f"{summary['realtime_factor']:.1f}x real time), {summary['segments']} segments, "
            f"{summary['switches_raw']} switches per frame, {summary['switches_smoothed']} smoothed. Written to "
            f"{out_dir}/ (frames.csv, segments.csv, timeline.png{written})"
        )
    else:
        print(f"UNREADABLE {video}: no frame could be classified.")
    return summary | {"error": summary["stopped"] if not summary["frames_classified"] else ""}


def _print_table(results: list[dict], top_k: int, limit: int = 20) -> None:
    bad = [r for r in results if r["error"]]
    for r in [r for r in results if not r["error"]][:limit]:
        guesses = ", ".join(f"{r[f'top{i + 1}']} {r[f'p{i + 1}']:.3f}" for i in range(top_k))
        answer = r["answer"] if r["answer"] != r["top1"] else ""
        extra = f"  [{answer}]" if answer else ""
        extra += f"  set: {r['prediction_set']}" if r.get("prediction_set") else ""
        print(f"{r['path']:<60}  {guesses}{extra}")
    if len(results) - len(bad) > limit:
        print(f"... {len(results) - len(bad) - limit} more")
    for r in bad:
        print(f"UNREADABLE {r['path']}: {r['error']}")
    outside = sum(1 for r in results if r.get("outside") is True)
    unsure = sum(1 for r in results if r.get("answer") == NOT_SURE)
    print(
        f"{len(results) - len(bad)} images classified, {len(bad)} unreadable"
        + (
            f"; {outside} outside the training data, {unsure} not sure"
            if any(r.get("prediction_set") for r in results)
            else ""
        )
        + "."
    )
