"""The GPU section of benchmark.md: `kvasir benchmark --device cuda`'s measurements (bench/gpu.py) as tables."""

from __future__ import annotations

from kvasir_mobileone.io import markdown_table


def render_gpu(gpu: dict) -> str:
    flops = ", ".join(f"{m} {f:.1f}" for m, f in gpu["gflops_per_training_image"].items())
    head = (
        f"\n## Training on the GPU (224 px, {gpu['images']} images, {gpu['steps']} timed steps after {gpu['warmup']}; "
        f"bf16 matmul {gpu['bf16_matmul_tflops']:.0f} TFLOP/s measured here; training GFLOP per image: {flops})\n\n"
        "previous: DataLoader workers + kornia, batch 32, 16-mixed, eager. current: the defaults on a GPU. "
        "Matmul fraction = training FLOP/s ÷ the bf16 matmul FLOP/s. Utilisation: NVML, as `nvidia-smi dmon` sm. "
        f"Bandwidth ≥: the step's least memory traffic, estimated as twice the activations it keeps for the backward "
        f"(its peak memory above weights, gradients and optimizer state; workspace included), per second, as a share "
        f"of the "
        f"{gpu.get('copy_bandwidth_gbs', 0):.0f} GB/s a device-to-device copy reaches here.\n\n"
    )
    table = markdown_table(
        [
            "model",
            "path",
            "loader",
            "batch",
            "precision",
            "compile",
            "channels_last",
            "images/s",
            "× previous",
            "GPU util",
            "matmul fraction",
            "warm-up (s)",
            "memory (GiB)",
            "bandwidth ≥",
        ],
        [
            [
                r["model"],
                r["path"],
                r["loader"],
                r["batch_size"],
                r["precision"],
                r["compile"],
                r["channels_last"],
                f"{r['images_per_s']:.0f}" if r.get("images_per_s") else r.get("error", "—"),
                f"{r['speedup_vs_previous']:.2f}" if r.get("speedup_vs_previous") else "—",
                f"{r['gpu_utilisation']:.0f}%" if r.get("gpu_utilisation") is not None else "—",
                f"{100 * r['matmul_fraction']:.1f}%" if r.get("matmul_fraction") else "—",
                f"{r['warmup_s']:.1f}" if r.get("warmup_s") else "—",
                f"{r['memory_gib']:.1f}" if r.get("memory_gib") else "—",
                f"{100 * r['min_bandwidth_fraction']:.0f}%" if r.get("min_bandwidth_fraction") else "—",
            ]
            for r in gpu["rows"]
        ],
    )
    return head + table + render_compile_cost(gpu)


def render_compile_cost(gpu: dict) -> str:
    """The compile modes' cost, cold and warm inductor cache, and the profiler's operator table."""
    if not gpu.get("compile_cost"):
        return ""
    rows = [
        [
            r["model"],
            r["compile"],
            *(
                [r.get("error", "—"), "", "", ""]
                if "error" in r
                else [
                    f"{r['cold_warmup_s']:.1f}",
                    f"{r['warm_warmup_s']:.1f}",
                    f"{r['cold_images_per_s']:.0f}",
                    f"{r['warm_images_per_s']:.0f}",
                ]
            ),
        ]
        for r in gpu["compile_cost"]
    ]
    text = (
        "\n\n## Compiling: what a machine pays once, and every later run\n\n"
        "Warm-up: from the start of fit to the first timed step, in a fresh process: with an empty inductor cache "
        "(cold), then on the cache the first filled (warm, as every later run on this machine).\n\n"
        + markdown_table(
            ["model", "compile", "warm-up cold (s)", "warm-up warm (s)", "images/s cold", "images/s warm"], rows
        )
    )
    if gpu.get("profile"):
        title = f"Where a {gpu['profile_model']} step's time goes (torch.profiler, 5 steps)"
        text += f"\n\n## {title}\n\n```\n{gpu['profile']}\n```\n"
    return text
