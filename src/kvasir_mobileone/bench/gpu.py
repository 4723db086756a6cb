"""`kvasir benchmark --device cuda`: training images/s on one GPU through the real Trainer, data module and model,
the previous data path against the GPU-resident one, with GPU utilisation and the fraction of the GPU's own bf16
matmul speed measured in the same run."""

from __future__ import annotations

import dataclasses
import gc
import logging
import shutil
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from kvasir_mobileone.bench.gpu_probes import (
    UtilisationSampler,
    copy_bandwidth_gbs,
    matmul_tflops,
    synchronize,
    training_flops_per_image,
)
from kvasir_mobileone.data.datamodule import DataConfig, ImageFolderDataModule
from kvasir_mobileone.data.folder import scan_image_folder
from kvasir_mobileone.data.split import class_names_of
from kvasir_mobileone.models.backbone import model_input_for
from kvasir_mobileone.models.classifier import Classifier, ModelConfig
from kvasir_mobileone.models.trainer import GPU_COMPILE

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class TrainingPath:
    """One way of training: the data path and the step settings."""

    loader: str
    augment_on: str
    batch_size: int
    precision: str
    compile: str
    channels_last: str


# Before issue 14: DataLoader workers over the uint8 cache, kornia on the GPU, batch 32, fp16 autocast, eager.
PREVIOUS = TrainingPath("workers", "kornia", 32, "16-mixed", "off", "off")
# Now, on a GPU: images resident in GPU memory, batched tensor-op augmentation, batch 256, fp16 autocast, NHWC.
CURRENT = TrainingPath("resident", "device", 256, "16-mixed", GPU_COMPILE, "on")
# One change at a time from CURRENT: what each flag's default is worth (a change equal to CURRENT is left out).
ABLATIONS = {
    "channels_last off": {"channels_last": "off"},
    "bf16-mixed": {"precision": "bf16-mixed"},
    "batch 128": {"batch_size": 128},
    "batch 512": {"batch_size": 512},
    "workers loader": {"loader": "workers"},
    "compile off": {"compile": "off"},
    "compile default": {"compile": "default"},  # compiling takes a minute or more: last
    "compile reduce-overhead": {"compile": "reduce-overhead"},
}


class StepTimer(Callback):
    """Times `steps` training batches after `warmup` (compilation, CUDA graph capture, worker start-up), then
    stops the fit; GPU utilisation is sampled over the timed steps."""

    def __init__(self, warmup: int, steps: int, sample_utilisation: bool):
        self.warmup, self.steps, self.sample = warmup, steps, sample_utilisation
        self.seen, self.images = 0, 0
        self.fit_start = self.start = self.seconds = self.warmup_s = self.resident_bytes = None
        self.warmup_peak = 0
        self.sampler: UtilisationSampler | None = None

    def on_fit_start(self, trainer, pl_module):
        self.fit_start = time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.seen == self.warmup:
            synchronize()
            self.start = time.perf_counter()
            self.warmup_s = self.start - self.fit_start
            if torch.cuda.is_available():  # weights, gradients and optimizer state are allocated by now
                self.resident_bytes = torch.cuda.memory_allocated()
                self.warmup_peak = torch.cuda.max_memory_allocated()  # the whole fit's peak is the larger one
                torch.cuda.reset_peak_memory_stats()
            if self.sample:
                self.sampler = UtilisationSampler().__enter__()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.seen += 1
        if self.seen > self.warmup:
            self.images += len(batch[1])
        if self.seen == self.warmup + self.steps:
            synchronize()
            self.seconds = time.perf_counter() - self.start
            if self.sampler is not None:
                self.sampler.__exit__()
            trainer.should_stop = True


def measure(
    name: str,
    path: TrainingPath,
    data_dir: Path,
    rows: list[dict],
    warmup: int,
    steps: int,
    image_size: int | None = None,
    callbacks: tuple[Callback, ...] = (),
) -> dict:
    """Training images/s of one model on one path, through Trainer.fit (validation off); on the CPU when there is
    no GPU (the tests), without the utilisation figure."""
    torch._dynamo.reset()
    gc.collect()
    gpu = torch.cuda.is_available()
    if gpu:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    L.seed_everything(0, verbose=False)
    model = ModelConfig(name=name, pretrained=False)
    module = Classifier(class_names_of(rows), model, 1000, model_input_for(name, image_size))
    module.accelerate(path.compile, path.channels_last, static_batch=path.batch_size)
    cfg = DataConfig(
        data_dir=str(data_dir),
        batch_size=path.batch_size,
        loader=path.loader,
        augment_on=path.augment_on,
        image_size=image_size,
    )
    datamodule = ImageFolderDataModule(cfg, rows, module.model_input)
    timer = StepTimer(warmup, steps, sample_utilisation=gpu)
    trainer = L.Trainer(
        accelerator="gpu" if gpu else "cpu",
        devices=1,
        precision=path.precision,
        max_steps=warmup + steps + 1,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer, *callbacks],
    )
    trainer.fit(module, datamodule=datamodule)
    if timer.seconds is None:
        raise RuntimeError(f"only {timer.seen} steps ran")
    # Bytes a training step moves, estimated from memory: every activation kept for the backward is written once in
    # the forward and read once in the backward, and the timed steps' peak above what stays allocated (weights,
    # gradients, optimizer state) is those activations, plus workspace (cuDNN, CUDA graph pools). An estimate of
    # the least traffic from memory statistics, not a count from hardware counters.
    transient = torch.cuda.max_memory_allocated() - timer.resident_bytes if gpu else None
    step_s = timer.seconds / steps
    return {
        "images_per_s": timer.images / timer.seconds,
        "gpu_utilisation": timer.sampler.mean if timer.sampler else None,
        "warmup_s": timer.warmup_s,
        "memory_gib": max(timer.warmup_peak, torch.cuda.max_memory_allocated()) / 2**30 if gpu else None,
        "min_step_gb": 2 * transient / 1e9 if transient else None,
        "min_bandwidth_gbs": 2 * transient / step_s / 1e9 if transient else None,
    }


class ProfileWindow(Callback):
    """torch.profiler over `steps` training batches after `warmup`: the operator table, by self time on the device
    (CUDA) or the CPU."""

    def __init__(self, warmup: int, steps: int):
        self.warmup, self.steps, self.seen = warmup, steps, 0
        self.profiler = None
        self.table = ""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.seen == self.warmup:
            from torch.profiler import ProfilerActivity, profile

            activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
            self.profiler = profile(activities=activities).__enter__()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.seen += 1
        if self.profiler is not None and self.seen == self.warmup + self.steps:
            synchronize()
            self.profiler.__exit__(None, None, None)
            key = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
            self.table = self.profiler.key_averages().table(sort_by=key, row_limit=15)
            self.profiler = None


def profile_summary(
    name: str,
    path: TrainingPath,
    data_dir: Path,
    rows: list[dict],
    warmup: int,
    steps: int,
    image_size: int | None = None,
) -> str:
    """The operators that take a training step's time, from torch.profiler over `steps` steps after `warmup`."""
    window = ProfileWindow(warmup, steps)
    measure(name, path, data_dir, rows, warmup, steps + 1, image_size, callbacks=(window,))
    return window.table


def _measure_in_process(cache_dir: str, queue, args: tuple) -> None:
    import os

    os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache_dir  # before anything compiles in this fresh process
    try:
        queue.put(measure(*args))
    except Exception as err:  # reported by the parent, with the configuration
        queue.put({"error": one_line(err)})


def one_line(err: Exception) -> str:
    """An error as a table cell: its class and the first line of its message."""
    return f"{type(err).__name__}: {(str(err).splitlines() or [''])[0][:160]}"


def answer_of(process, queue, timeout_s: float) -> dict:
    """What a spawned measurement put on its queue; an error when the process died without an answer (a kernel
    abort: noticed within seconds) or gave none within timeout_s (then it is killed)."""
    import queue as queues

    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        try:
            return queue.get(timeout=5)
        except queues.Empty:
            if not process.is_alive():
                return {"error": f"the process died without an answer (exit code {process.exitcode})"}
    process.kill()
    return {"error": f"no answer within {timeout_s:.0f} s: stopped"}


def compile_cost(
    name: str,
    mode: str,
    data_dir: Path,
    rows: list[dict],
    warmup: int,
    steps: int,
    image_size: int | None = None,
    path: TrainingPath | None = None,
    cache_dir: Path | None = None,
    timeout_s: float = 900,
) -> dict:
    """Warm-up (start to the first timed step: compiling, autotuning, CUDA graph capture) and speed of `mode`, in a
    fresh process with an empty inductor cache (cold), then in another fresh process on the cache the first one
    filled (warm): what a machine pays once per model, and what every later run pays. `cache_dir` (emptied first)
    keeps the cache; by default it is a temporary folder."""
    import multiprocessing
    import tempfile

    context = multiprocessing.get_context("spawn")
    path = dataclasses.replace(path or CURRENT, compile=mode)
    result = {"model": name, "compile": mode}
    with tempfile.TemporaryDirectory(prefix="inductor-") as tmp:
        if cache_dir:  # a given folder is kept: a later fit with that cache starts warm; cold means empty
            shutil.rmtree(cache_dir, ignore_errors=True)
        cache_dir = str(cache_dir or tmp)
        for state in ("cold", "warm"):
            queue = context.Queue()
            args = (name, path, data_dir, rows, warmup, steps, image_size)
            process = context.Process(target=_measure_in_process, args=(cache_dir, queue, args))
            process.start()
            measured = answer_of(process, queue, timeout_s)
            process.join(30)
            if process.is_alive():  # answered, but stuck on its way out
                process.kill()
            if "error" in measured:
                return result | {"error": f"{state}: {measured['error']}"}
            result[f"{state}_warmup_s"] = measured["warmup_s"]
            result[f"{state}_images_per_s"] = measured["images_per_s"]
    return result


def kvasir_sized_rows(data_dir: Path, images: int) -> list[dict]:
    """A Kvasir-sized split (80/10/10 of `images` rows) cycling through the folder's images: speed does not depend
    on which images they are, and generating thousands of JPEGs would cost more than the benchmark."""
    items = scan_image_folder(data_dir)
    rows = []
    for k in range(images):
        path, label = items[k % len(items)]
        split = "train" if k % 10 < 8 else ("val" if k % 10 == 8 else "test")
        rows.append({"path": path, "label": label, "split": split})
    return rows


def bench_gpu_training(
    models: tuple[str, ...],
    data_dir: Path,
    images: int,
    ablate: tuple[str, ...] = (),
    steps: int = 40,
    warmup: int = 15,
    budget_s: float = 240,
    compile_models: tuple[str, ...] = ("mobileone_s0", "mobileone_s3"),
    compile_modes: tuple[str, ...] = ("default", "reduce-overhead"),
    profile_model: str | None = "mobileone_s0",
    compile_cache: Path | None = None,
) -> dict:
    """Every model on the previous and the current path, then one change at a time from the current path for
    each `ablate` model; configurations that would start after `budget_s` are listed as not measured. Then each
    compile mode's cost, cold and warm cache (compile_cost), and a profiler summary of one model's step."""
    began = time.perf_counter()
    peak = matmul_tflops()
    copy_gbs = copy_bandwidth_gbs()
    rows = kvasir_sized_rows(data_dir, images)
    plan = [(m, label, path) for m in models for label, path in (("previous", PREVIOUS), ("current", CURRENT))]
    for name in ablate:
        changed = [(label, dataclasses.replace(CURRENT, **change)) for label, change in ABLATIONS.items()]
        plan += [(name, label, path) for label, path in changed if path != CURRENT]
    flops = {m: training_flops_per_image(m) for m in {m for m, _, _ in plan}}
    results = []
    for name, label, path in plan:
        row = {"model": name, "path": label} | dataclasses.asdict(path)
        if time.perf_counter() - began > budget_s:
            results.append(row | {"error": f"not measured: past the {budget_s:.0f} s budget"})
            continue
        try:
            row |= measure(name, path, data_dir, rows, warmup, steps)
            row["matmul_fraction"] = flops[name] * row["images_per_s"] / (peak * 1e12)
            if row.get("min_bandwidth_gbs"):
                row["min_bandwidth_fraction"] = row["min_bandwidth_gbs"] / copy_gbs
        except Exception as err:  # one failing configuration is reported, the others still run
            row["error"] = one_line(err)
        log.info("%s", row)
        results.append(row)
    for row in results:
        before = next((r for r in results if r["model"] == row["model"] and r["path"] == "previous"), None)
        if row.get("images_per_s") and before and before.get("images_per_s"):
            row["speedup_vs_previous"] = row["images_per_s"] / before["images_per_s"]
    compiled = []
    for name in compile_models:
        for mode in compile_modes:
            if time.perf_counter() - began > budget_s:
                compiled.append({"model": name, "compile": mode, "error": f"not measured: past the {budget_s:.0f} s"})
                continue
            cache = compile_cache / f"{name}-{mode}" if compile_cache else None
            compiled.append(compile_cost(name, mode, data_dir, rows, warmup, steps, cache_dir=cache))
            log.info("%s", compiled[-1])
    try:  # the measurements above stand whatever the profiler does
        profile = profile_summary(profile_model, CURRENT, data_dir, rows, warmup, 5) if profile_model else ""
    except Exception as err:
        profile = f"the profiler failed: {one_line(err)}"
    return {
        "bf16_matmul_tflops": peak,
        "copy_bandwidth_gbs": copy_gbs,
        "gflops_per_training_image": {m: f / 1e9 for m, f in flops.items()},
        "images": images,
        "steps": steps,
        "warmup": warmup,
        "rows": results,
        "compile_cost": compiled,
        "profile_model": profile_model,
        "profile": profile,
    }
