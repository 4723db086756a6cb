"""benchmark.md: the tables of one `kvasir benchmark` run, with the ratios each row is read by."""

from __future__ import annotations

from kvasir_mobileone.bench.gpu_report import render_gpu
from kvasir_mobileone.io import markdown_table


def render(report: dict) -> str:
    """benchmark.md: the machine, then a section for each part the run measured, then how to reproduce it."""
    m = report["machine"]
    parts = [
        "# kvasir benchmark\n",
        f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['torch_threads']} threads), "
        f"GPU: {m['gpu'] or 'none'}; {m['date']}. fp32 matmul: {report['matmul_gflops_fp32']:.0f} GFLOP/s.\n",
    ]
    parts += [section(report) for key, section in SECTIONS.items() if key in report]
    command = (
        "bash benchmarks/gpu_check.sh" if "gpu_training" in report else "kvasir benchmark --out benchmarks/results"
    )
    parts.append(f"\nReproduce: `{command}`.\n")
    return "".join(parts)


def data_section(report: dict) -> str:
    return f"\n## Data loading (training loader, {report['workers']} workers, 224 px, Kvasir-sized JPEGs)\n\n" + (
        markdown_table(
            ["loader", "images/s", "× naive", "cache build (s)"],
            [
                [
                    r["loader"],
                    f"{r['images_per_s']:.0f}",
                    f"{r['speedup_vs_naive']:.1f}",
                    f"{r['cache_build_s']:.1f}" if r.get("cache_build_s") else "—",
                ]
                for r in report["data"]
            ],
        )
    )


def check_section(report: dict) -> str:
    first = report["check"][0]
    return (
        f"\n## Check of a split (HyperKvasir-shaped: {first['images']:,} synthetic JPEGs at {first['scale']} of "
        "Kvasir's sizes; decode, SHA-1 and perceptual hash of each, near-duplicate groups, leaks)\n\n"
    ) + markdown_table(
        ["check", "images", "seconds", "images/s", "× empty cache"],
        [
            [
                r["check"],
                r["images"],
                f"{r['seconds']:.1f}",
                f"{r['images'] / r['seconds']:.0f}",
                f"{r['speedup_vs_cold']:.1f}",
            ]
            for r in report["check"]
        ],
    )


def training_section(report: dict) -> str:
    return "\n## Training step (224 px, Adam, this CPU)\n\n" + markdown_table(
        ["model", "precision", "channels_last", "images/s", "× fp32"],
        [
            [
                r["model"],
                r["precision"],
                r["channels_last"],
                f"{r['images_per_s']:.1f}" if r["images_per_s"] else r["error"],
                f"{r['speedup_vs_fp32']:.2f}" if r["speedup_vs_fp32"] else "—",
            ]
            for r in report["training"]
        ],
    )


def inference_section(report: dict) -> str:
    return (
        "\n## Inference (224 px; CPU fraction = model FLOP/s ÷ fp32 matmul FLOP/s, so int8 can pass 100%)\n\n"
    ) + markdown_table(
        ["model", "batch", "runtime", "ms/image", "images/s", "× unfused", "× ORT fp32", "CPU fraction"],
        [
            [
                r["model"],
                r["batch"],
                r["runtime"],
                f"{r['ms_per_image']:.2f}",
                f"{r['images_per_s']:.1f}",
                f"{r['speedup_vs_unfused']:.2f}",
                f"{r['speedup_vs_ort_fp32']:.2f}",
                f"{100 * r['cpu_fraction']:.0f}%",
            ]
            for r in report["inference"]
        ],
    )


def video_section(report: dict) -> str:
    return (
        "\n## Video (`kvasir predict VIDEO` end to end at 224 px: decode, scale, model, smoothing, outputs; "
        "real-time factor = the video's duration ÷ wall time)\n\n"
    ) + markdown_table(
        ["model", "precision", "video", "frames", "s", "frames/s", "× real time"],
        [
            [
                r["model"],
                r["precision"],
                r["video"],
                r["frames"],
                f"{r['seconds']:.1f}",
                f"{r['frames_per_s']:.1f}",
                f"{r['realtime_factor']:.2f}",
            ]
            for r in report["video"]
        ],
    )


def live_section(report: dict) -> str:
    return (
        "\n## Live (`kvasir watch` on a 1080p H.264 examination played at its own pace: latency = from a frame decoded "
        "to its answer: scaling, model, smoothing; a frame that arrives while the model is busy is skipped, never "
        "queued)\n\n"
    ) + markdown_table(
        ["model", "precision", "fps", "classified", "latency p50 (ms)", "p95", "max", "p95 within a frame"],
        [
            [
                r["model"],
                r["precision"],
                r["fps"],
                f"{r['frames_classified']} of {r['frames_seen']} ({r['classified_share']:.0%})",
                f"{r['latency_p50_ms']:.1f}" if r["latency_p50_ms"] is not None else "—",
                f"{r['latency_p95_ms']:.1f}" if r["latency_p95_ms"] is not None else "—",
                f"{r['latency_max_ms']:.1f}" if r["latency_max_ms"] is not None else "—",
                f"{'yes' if r['p95_within_a_frame'] else 'no'} ({r['frame_interval_ms']:.1f} ms)",
            ]
            for r in report["live"]
        ],
    )


def gpu_section(report: dict) -> str:
    return render_gpu(report["gpu_training"])


# benchmark.json's parts, in the order benchmark.md shows them
SECTIONS = {
    "data": data_section,
    "check": check_section,
    "training": training_section,
    "inference": inference_section,
    "video": video_section,
    "live": live_section,
    "gpu_training": gpu_section,
}
