"""Latency of any runtime (onnxruntime, ExecuTorch, PyTorch) on one batch, timed the same way for all."""

from __future__ import annotations

import numpy as np


def latency_ms(logits, shape: tuple[int, ...], repeats: int = 20) -> float:
    """Median ms per image of one batch of `shape` through `logits` (any runtime's function of its input), after
    three warm-up calls."""
    import time

    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    for _ in range(3):
        logits(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        logits(x)
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000 / shape[0])
