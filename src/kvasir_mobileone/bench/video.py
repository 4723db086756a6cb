"""`kvasir benchmark`'s video section: `kvasir predict VIDEO` end to end — decode (PyAV, threads on, the decoder
scaling to 224 px), the model on onnxruntime, smoothing, frames.csv, segments.csv and timeline.png written — on a
synthetic 1080p 25 fps H.264 examination, for each model fp32 and int8, beside decoding alone; each row's real-time
factor is the video's duration over the wall time. Random-init models: speed only, the labels mean nothing."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from kvasir_mobileone.bench.cpu import NORM, calibrated
from kvasir_mobileone.data.synth import KVASIR_CLASSES, synth_image
from kvasir_mobileone.data.synth_video import write_examination
from kvasir_mobileone.deploy.examination import run_video
from kvasir_mobileone.deploy.export import export_onnx
from kvasir_mobileone.deploy.quantize import DEFAULT_CONFIG, preprocess, quantize
from kvasir_mobileone.deploy.video import frames, model_threads
from kvasir_mobileone.models.backbone import fuse

CLASSES = ("dyed-lifted-polyps", "esophagitis", "normal-cecum", "polyps")


class SpeedPredictor:
    """The least of a deploy/runtime.Predictor that run_video reads: classes, the model input, outputs(); no
    detector, no temperature."""

    def __init__(self, session, class_names):
        self.session, self.model_input, self.uncertainty = session, NORM, None
        self.class_names, self.temperature = list(class_names), None

    def outputs(self, batch: np.ndarray):
        return self.session.run(None, {"image": batch})[0], None

    def logits(self, batch: np.ndarray) -> np.ndarray:
        return self.outputs(batch)[0]


def speed_predictors(name: str, workdir: Path) -> list[tuple[str, SpeedPredictor]]:
    """("fp32", ...), ("int8", ...): the random-init model fused, exported to ONNX and quantized as `kvasir export`
    does (once per workdir: the video and live sections share them), on onnxruntime as a bundle runs a video."""
    import onnxruntime as ort

    onnx_path, int8_path = workdir / f"{name}.onnx", workdir / f"{name}.int8.onnx"
    if not int8_path.is_file():
        export_onnx(fuse(calibrated(name)), torch.rand(1, 3, 224, 224), onnx_path, 17)
        calibration = np.random.default_rng(0).standard_normal((16, 3, 224, 224)).astype(np.float32)
        with tempfile.TemporaryDirectory(dir=workdir) as tmp:
            prepared = preprocess(onnx_path, Path(tmp) / "prepared.onnx")
            quantize(prepared, int8_path, calibration, "image", DEFAULT_CONFIG)
    found = []
    for precision, model_path in (("fp32", onnx_path), ("int8", int8_path)):
        options = ort.SessionOptions()
        options.intra_op_num_threads = model_threads()  # as `kvasir predict VIDEO` and `kvasir watch` run a bundle
        session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        found.append((precision, SpeedPredictor(session, KVASIR_CLASSES)))  # calibrated(): 8 outputs
    return found


def examination_1080p(path: Path, seconds_per_class: float = 6.0, fps: int = 25) -> Path:
    """A 1920 x 1080 H.264 synthetic examination (about 26 s at 6 s a class)."""
    return write_examination(path, CLASSES, synth_image, 0, (1920, 1080), fps, seconds_per_class, 0.6, 0.0)[0]


def bench_video(
    models: tuple[str, ...], workdir: Path, batch_size: int = 16, repeats: int = 2, seconds_per_class: float = 6.0
) -> list[dict]:
    """One row per model and precision, and decoding alone; each the fastest of `repeats` runs."""
    video = examination_1080p(workdir / "examination_1080p.mp4", seconds_per_class)
    decode_s = []
    for _ in range(repeats):
        info, batches = frames(video, NORM, batch_size=batch_size)
        start = time.perf_counter()
        decoded = sum(len(b[0]) for b in batches)
        decode_s.append(time.perf_counter() - start)
    decode_s = min(decode_s)
    duration = decoded / info.fps
    rows = [_row("decoding alone (PyAV, scaled to 224)", "—", decoded, duration, decode_s, info)]
    for name in models:
        for precision, predictor in speed_predictors(name, workdir):
            seconds = []
            for _ in range(repeats):
                start = time.perf_counter()
                summary = run_video(predictor, video, workdir / f"{name}-{precision}", batch_size=batch_size)
                seconds.append(time.perf_counter() - start)
            seconds = min(seconds)
            rows.append(_row(name, precision, summary["frames_classified"], duration, seconds, info))
    return rows


def _row(model: str, precision: str, frames_done: int, duration: float, seconds: float, info) -> dict:
    return {
        "model": model,
        "precision": precision,
        "video": f"{info.width}x{info.height} {info.codec} {info.fps:g} fps, {duration:.1f} s",
        "frames": frames_done,
        "seconds": seconds,
        "frames_per_s": frames_done / seconds,
        "realtime_factor": duration / seconds,
    }
