"""What `kvasir benchmark --device cuda` measures besides training itself: the GPU's own bf16 matmul speed, a
model's training FLOPs per image, host-to-device copy bandwidth and GPU utilisation (NVML)."""

from __future__ import annotations

import threading
import time

import torch

from kvasir_mobileone.extras import require
from kvasir_mobileone.models.backbone import create_backbone, flops_per_image


def matmul_tflops(n: int = 8192, repeats: int = 10) -> float:
    """The GPU's own bf16 speed: an n x n x n matrix product on random data, timed with CUDA events."""
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        a @ b
    end.record()
    torch.cuda.synchronize()
    return 2 * n**3 * repeats / (start.elapsed_time(end) / 1000) / 1e12


def training_flops_per_image(name: str) -> float:
    """FLOPs of one training step per image at 224 px: 3 x the unfused forward (the backward costs about twice the
    forward; FlopCounterMode's own count of the backward is ~10x the forward for these grouped convolutions, so it
    is not used)."""
    return 3 * flops_per_image(create_backbone(name, 2, pretrained=False).train())


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class UtilisationSampler:
    """Mean GPU utilisation (NVML: share of time a kernel was running, what `nvidia-smi dmon` shows as sm) over
    a window, sampled every 50 ms in a thread."""

    def __init__(self):
        pynvml = require("pynvml", "gpu")
        pynvml.nvmlInit()
        self._nvml = pynvml
        self._handle = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(0.05):
            self.samples.append(self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    @property
    def mean(self) -> float | None:
        return sum(self.samples) / len(self.samples) if self.samples else None


def copy_bandwidth_gbs(nbytes: int = 2**30, repeats: int = 10) -> float:
    """The memory bandwidth a plain copy reaches on this device (read + write counted): nbytes copied
    device-to-device, timed with CUDA events; host memory with perf_counter on a CPU."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    source = torch.empty(nbytes, dtype=torch.uint8, device=device)
    target = torch.empty_like(source)
    target.copy_(source)
    synchronize()
    start = time.perf_counter()
    if device == "cuda":
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
    for _ in range(repeats):
        target.copy_(source)
    if device == "cuda":
        end.record()
        torch.cuda.synchronize()
        seconds = begin.elapsed_time(end) / 1000
    else:
        seconds = time.perf_counter() - start
    return 2 * nbytes * repeats / seconds / 1e9
