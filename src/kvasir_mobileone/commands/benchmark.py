"""`kvasir benchmark`: data, training and inference speed, every figure a ratio measured side by side in one run
(the measurements are in bench/)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Literal

import torch

from kvasir_mobileone.bench.cpu import (
    MODELS,
    bench_check,
    bench_data,
    bench_inference,
    bench_training,
    machine,
    matmul_flops_per_s,
)
from kvasir_mobileone.bench.report import render
from kvasir_mobileone.data.folder import default_num_workers
from kvasir_mobileone.data.synth import synth
from kvasir_mobileone.errors import UserError
from kvasir_mobileone.io import write_json, write_text


def benchmark(
    out: str = "benchmarks/results",
    data_dir: str | None = None,
    num_images: int = 160,
    num_workers: int | None = None,
    train_models: tuple[str, ...] = ("mobileone_s0", "mobileone_s3"),
    train_batch: int = 8,
    train_steps: int = 3,
    train_timeout_s: float = 300,
    inference_models: tuple[str, ...] = MODELS,
    inference_batches: tuple[int, ...] = (1, 32),
    skip: tuple[str, ...] = (),
    device: Literal["cpu", "cuda"] = "cpu",
    gpu_models: tuple[str, ...] = ("mobileone_s0", "mobileone_s3", "mobileone_s4"),
    gpu_images: int = 8000,
    gpu_ablate: tuple[str, ...] = ("mobileone_s3",),
    gpu_budget_s: float = 240,
    gpu_compile_models: tuple[str, ...] = ("mobileone_s0", "mobileone_s3"),
    gpu_compile_modes: tuple[str, ...] = ("default", "reduce-overhead"),
    gpu_compile_cache: str | None = None,
    check_images: int = 10662,
    check_scale: float = 0.5,
    video_models: tuple[str, ...] = ("mobileone_s0", "mobileone_s3"),
    video_seconds_per_class: float = 6.0,
    live_models: tuple[str, ...] = ("mobileone_s0", "mobileone_s3"),
    live_rates: tuple[int, ...] = (25, 30, 60),
    live_seconds_per_class: float = 2.0,
) -> Path:
    """Measure data loading, training steps and inference side by side; write benchmark.json and benchmark.md.

    --device cuda measures training on the GPU instead: every gpu_models model on the previous and the current
    path (a Kvasir-sized split of synthetic images, or of --data_dir), then one setting at a time for gpu_ablate,
    then each of gpu_compile_modes for gpu_compile_models with a cold and a warm inductor cache (in
    gpu_compile_cache/MODEL-MODE when given, so that a later `kvasir fit` can start warm), and a profiler summary.
    The check section times `kvasir check` of a HyperKvasir-shaped folder of check_images synthetic JPEGs at
    check_scale of Kvasir's sizes against the official split, cold and cached (skip it with --skip '[check]'). The
    video section runs `kvasir predict VIDEO` end to end on a synthetic 1080p 25 fps examination for each of
    video_models, fp32 and int8, beside decoding alone (video_seconds_per_class of each of 4 classes, 0.6 s changes
    between them: 26 s by default): frames per second and the real-time factor. The live section runs `kvasir watch`
    on a synthetic 1080p examination played at its own pace at each of live_rates frames per second
    (live_seconds_per_class of each class) for each of live_models, fp32 and int8: latency p50/p95/max and the share of
    the frames classified."""
    workers = default_num_workers() if num_workers is None else num_workers
    report: dict = {"machine": machine(), "workers": workers}
    report["matmul_gflops_fp32"] = matmul_flops_per_s() / 1e9
    with tempfile.TemporaryDirectory() as tmp:
        tmp_dir = Path(tmp)
        if device == "cuda":
            if not torch.cuda.is_available():
                raise UserError("--device cuda: no CUDA GPU is visible to torch here (torch.cuda.is_available()).")
            from kvasir_mobileone.bench.gpu import bench_gpu_training

            folder = Path(data_dir) if data_dir else synth(str(tmp_dir / "synth"), images_per_class=64, scale=0.3)
            report["gpu_training"] = bench_gpu_training(
                gpu_models,
                folder,
                gpu_images,
                gpu_ablate,
                budget_s=gpu_budget_s,
                compile_models=gpu_compile_models,
                compile_modes=gpu_compile_modes,
                compile_cache=Path(gpu_compile_cache) if gpu_compile_cache else None,
            )
            skip = ("data", "check", "training", "inference", "video", "live")
        if "data" not in skip:
            per_class = max(2, num_images // 8)
            folder = Path(data_dir) if data_dir else synth(str(tmp_dir / "synth"), images_per_class=per_class)
            report["data"] = bench_data(folder, workers)
        if "check" not in skip:
            report["check"] = bench_check(check_images, check_scale, tmp_dir)
        if "training" not in skip:
            report["training"] = bench_training(train_models, train_batch, train_steps, train_timeout_s)
        if "inference" not in skip:
            report["inference"] = bench_inference(
                inference_models, inference_batches, report["matmul_gflops_fp32"] * 1e9, tmp_dir
            )
        if "video" not in skip:
            from kvasir_mobileone.bench.video import bench_video

            report["video"] = bench_video(video_models, tmp_dir, seconds_per_class=video_seconds_per_class)
        if "live" not in skip:
            from kvasir_mobileone.bench.live import bench_live

            report["live"] = bench_live(live_models, tmp_dir, live_rates, live_seconds_per_class)
    out_dir = Path(out)
    write_json(out_dir / "benchmark.json", report)
    text = render(report)
    write_text(out_dir / "benchmark.md", text)
    print(text)
    return out_dir
