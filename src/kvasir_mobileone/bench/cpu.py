"""What `kvasir benchmark` measures on a CPU (and the inference rows on any device): data loading, training
steps, fused inference fp32/int8/ExecuTorch, the split check; each figure a ratio measured side by side in one run."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import timm
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2 as T

from kvasir_mobileone.data.check import check_split
from kvasir_mobileone.data.datamodule import DataConfig, ImageFolderDataModule
from kvasir_mobileone.data.folder import scan_image_folder
from kvasir_mobileone.data.split import make_split, write_manifest
from kvasir_mobileone.data.synth import hyper_kvasir_sizes, synth
from kvasir_mobileone.deploy.export import export_onnx
from kvasir_mobileone.deploy.quantize import DEFAULT_CONFIG, preprocess, quantize
from kvasir_mobileone.errors import UserError
from kvasir_mobileone.images import ModelInput
from kvasir_mobileone.models.backbone import flops_per_image, fuse

MODELS = ("mobileone_s0", "mobileone_s1", "mobileone_s2", "mobileone_s3", "mobileone_s4")
NORM = ModelInput(224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

log = logging.getLogger(__name__)


def machine() -> dict:
    cpu = platform.processor()
    with contextlib.suppress(OSError, StopIteration):
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": gpu,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def timed(fn, repeats: int, warmup: int = 1) -> float:
    """Median seconds of fn() over repeats, after warm-up calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def matmul_flops_per_s(n: int = 2048) -> float:
    """The CPU's (or GPU's) own fp32 speed: a large matrix multiplication, timed in this run."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / timed(lambda: a @ b, 5)


class NaiveDataset(Dataset):
    """The original workflow's loader: full-size PIL decode, then resize/rotate/flip/jitter/normalize in float."""

    def __init__(self, paths: list[Path]):
        self.paths = paths
        self.transform = T.Compose(
            [
                T.ToImage(),
                T.ToDtype(torch.float32, scale=True),
                T.Resize((224, 224), antialias=True),
                T.RandomRotation(15),
                T.RandomHorizontalFlip(),
                T.RandomVerticalFlip(),
                T.ColorJitter(0.2, 0.2, 0.2, 0.02),
                T.Normalize(NORM.mean, NORM.std),
            ]
        )

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        with Image.open(self.paths[i]) as image:
            return self.transform(image.convert("RGB")), 0


def images_per_s(loader: DataLoader, epochs: int = 2) -> float:
    """Images delivered per second, ignoring the first epoch (worker start-up)."""
    count, start = 0, None
    for epoch in range(epochs + 1):
        if epoch == 1:
            start = time.perf_counter()
        for batch in loader:
            count += len(batch[0]) if epoch else 0
    return count / (time.perf_counter() - start)


def bench_data(data_dir: Path, workers: int, batch_size: int = 32) -> list[dict]:
    rows = make_split(scan_image_folder(data_dir), 0.1, 0.1, seed=0)
    train_paths = [data_dir / r["path"] for r in rows if r["split"] == "train"]
    results = []
    naive = DataLoader(
        NaiveDataset(train_paths), batch_size, shuffle=True, num_workers=workers, persistent_workers=workers > 0
    )
    results.append({"loader": "naive: full PIL decode + float transforms", "images_per_s": images_per_s(naive)})
    variants = (
        (False, "workers", "ours, no cache: JPEG draft decode + uint8 augmentation in workers"),
        (True, "workers", "ours: decode-once uint8 cache + uint8 augmentation in workers"),
        (True, "device", "ours: decode-once uint8 cache, augmentation on the GPU (loader side; default with CUDA)"),
    )
    for cache, augment_on, name in variants:
        cfg = DataConfig(
            data_dir=str(data_dir),
            batch_size=batch_size,
            num_workers=workers,
            cache=cache,
            augment_on=augment_on,
            loader="workers",
        )
        datamodule = ImageFolderDataModule(cfg, rows, NORM)
        start = time.perf_counter()
        datamodule.prepare_data()
        datamodule.setup("fit")
        build = time.perf_counter() - start
        speed = images_per_s(datamodule.train_dataloader())
        results.append({"loader": name, "images_per_s": speed, "cache_build_s": build if cache else None})
    for r in results:
        r["speedup_vs_naive"] = r["images_per_s"] / results[0]["images_per_s"]
    return results


def calibrated(name: str) -> torch.nn.Module:
    """A random-init model whose BatchNorm statistics have seen data: eval-mode activations stay finite."""
    model = timm.create_model(name, num_classes=8)
    with torch.no_grad():
        model.train()
        for _ in range(2):
            model(torch.rand(2, 3, 224, 224))
    return model.eval()


def _train_step_speed(name: str, bf16: bool, channels_last: bool, batch_size: int, steps: int, queue) -> None:
    model = timm.create_model(name, num_classes=8).train()
    x = torch.randn(batch_size, 3, 224, 224)
    y = torch.randint(0, 8, (batch_size,))
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), 1e-4)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    queue.put(batch_size / timed(step, steps))


def bench_training(models: tuple[str, ...], batch_size: int, steps: int, timeout_s: float = 300) -> list[dict]:
    """Each configuration in its own process: one that crashes (some CPU kernels abort) or hangs past timeout_s is
    reported, not fatal."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    results = []
    for name in models:
        for bf16 in (False, True):
            for channels_last in (False, True):
                queue = context.Queue()
                process = context.Process(
                    target=_train_step_speed, args=(name, bf16, channels_last, batch_size, steps, queue)
                )
                process.start()
                process.join(timeout_s)
                if process.is_alive():  # some CPU kernels hang instead of aborting (channels_last backward)
                    process.kill()
                    process.join()
                    error = f"no step within {timeout_s:.0f} s: stopped"
                else:
                    error = None if process.exitcode == 0 else f"process died (exit code {process.exitcode})"
                speed = queue.get() if error is None else None
                results.append(
                    {
                        "model": name,
                        "precision": "bf16 autocast" if bf16 else "fp32",
                        "channels_last": channels_last,
                        "images_per_s": speed,
                        "error": error,
                    }
                )
        base = next(r for r in results if r["model"] == name and r["precision"] == "fp32" and not r["channels_last"])
        for r in results:
            if r["model"] == name:
                both = r["images_per_s"] and base["images_per_s"]
                r["speedup_vs_fp32"] = r["images_per_s"] / base["images_per_s"] if both else None
    return results


def bench_inference(models: tuple[str, ...], batches: tuple[int, ...], peak: float, workdir: Path) -> list[dict]:
    import onnxruntime as ort

    results = []
    for name in models:
        unfused = calibrated(name)
        fused = fuse(unfused)
        flops = flops_per_image(fused)
        onnx_path = export_onnx(fused, torch.rand(1, 3, 224, 224), workdir / f"{name}.onnx", 17)
        session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        # int8 as `kvasir export --quantize int8` makes it (speed only: calibrated on random images here)
        calibration = np.random.default_rng(0).standard_normal((16, 3, 224, 224)).astype(np.float32)
        with tempfile.TemporaryDirectory(dir=workdir) as tmp:
            prepared = preprocess(onnx_path, Path(tmp) / "prepared.onnx")
            int8_path = quantize(prepared, workdir / f"{name}.int8.onnx", calibration, "image", DEFAULT_CONFIG)
        int8 = ort.InferenceSession(str(int8_path), providers=["CPUExecutionProvider"])
        programs = executorch_programs(fused, calibration, workdir / name)
        for batch in batches:
            x = torch.rand(batch, 3, 224, 224)
            repeats = 10 if batch == 1 else 3
            runtimes = {
                "unfused eager fp32": lambda m=unfused, x=x: m(x),
                "fused eager fp32": lambda m=fused, x=x: m(x),
                "fused eager bf16 autocast": lambda m=fused, x=x: _bf16(m, x),
                "fused onnxruntime fp32": lambda s=session, x=x: s.run(None, {"image": x.numpy()}),
                "fused onnxruntime int8": lambda s=int8, x=x: s.run(None, {"image": x.numpy()}),
            } | {runtime: lambda p=p, x=x: p.logits(x.numpy()) for runtime, p in programs.items()}
            row = []
            with torch.no_grad():
                for runtime, fn in runtimes.items():
                    ips = batch / timed(fn, repeats)
                    row.append(
                        {
                            "model": name,
                            "batch": batch,
                            "runtime": runtime,
                            "images_per_s": ips,
                            "ms_per_image": 1000 / ips,
                            "cpu_fraction": flops * ips / peak,
                        }
                    )
            ort_fp32 = next(r for r in row if r["runtime"] == "fused onnxruntime fp32")["images_per_s"]
            for r in row:
                r["speedup_vs_unfused"] = r["images_per_s"] / row[0]["images_per_s"]
                r["speedup_vs_ort_fp32"] = r["images_per_s"] / ort_fp32
            results += row
        results[-1]["gflops_per_image"] = flops / 1e9
    return results


def executorch_programs(fused: torch.nn.Module, calibration: np.ndarray, stem: Path) -> dict:
    """{runtime name: PteModel} of the fused model lowered to XNNPACK, fp32 and int8 (as `kvasir export --format
    executorch` makes them; int8 calibrated on the same random images as onnxruntime's here, speed only); empty,
    with a note, without the 'mobile' extra. A batch above the program's bound runs in chunks (said in the name)."""
    from kvasir_mobileone.deploy import pte

    try:
        pte.require_executorch()
    except UserError as missing:
        log.info("No ExecuTorch rows: %s", missing)
        return {}
    example = torch.from_numpy(calibration[:2])
    programs = {
        "fp32": pte.PteModel(pte.export_pte(fused, example, stem.with_suffix(".pte"))),
        "int8": pte.PteModel(pte.export_pte_int8(fused, calibration, stem.with_suffix(".int8.pte"))),
    }
    return {f"fused ExecuTorch XNNPACK {k} (batch ≤ {p.max_batch})": p for k, p in programs.items()}


def _bf16(model, x):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return model(x)


def bench_check(images: int, scale: float, workdir: Path) -> list[dict]:
    """Seconds to check a HyperKvasir-shaped folder against its official split (every image decoded and hashed,
    near-duplicates grouped, leaks found), with an empty hash cache and again with a warm one, and a manifest of the
    same split checked with the warm cache."""
    sizes = hyper_kvasir_sizes().values()
    largest = max(2, round(images * max(sizes) / sum(sizes)))
    root = synth(
        str(workdir / "hyper-kvasir"),
        images_per_class=largest,
        scale=scale,
        layout="hyper-kvasir",
        sizes="hyper-kvasir",
    )
    rows, split_rows = [], []
    for what in ("official split, empty cache", "official split, cached", "manifest, cached"):
        manifest = write_manifest(workdir / "manifest.csv", split_rows) if what.startswith("manifest") else None
        start = time.perf_counter()
        split = DataConfig(str(root), manifest, official_split=None if manifest else "hyper-kvasir-2fold")
        split_rows, report, _ = check_split(split)
        rows.append({"check": what, "images": len(report.items), "seconds": time.perf_counter() - start})
        rows[-1]["scale"] = scale
    for r in rows:
        r["speedup_vs_cold"] = rows[0]["seconds"] / r["seconds"]
    return rows
