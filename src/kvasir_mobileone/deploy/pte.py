"""ExecuTorch: the fused model as a .pte program lowered to XNNPACK (the CPU backend of phones and tablets), fp32
and int8 (PyTorch 2 export quantization with XNNPACK's quantizer), and ExecuTorch's own runtime to run it.

The batch axis is dynamic, so one file serves a single frame and a batch: torch.export is asked for 1 to
MAX_BATCH, and the runtime's memory plan may bound it lower (15 for mobileone_s0 at 48 px, measured with
ExecuTorch 1.5.1): `PteModel.max_batch` reads the bound from the program and larger batches run in chunks.
ExecuTorch's Python runtime takes torch tensors: running a .pte here imports torch (the on-device runtime does
not)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from kvasir_mobileone.deploy.latency import latency_ms
from kvasir_mobileone.errors import UserError
from kvasir_mobileone.extras import require
from kvasir_mobileone.io import atomic_path
from kvasir_mobileone.runs import PTE_INT8_NAME, PTE_NAME

MAX_BATCH = 64  # the largest batch the programs accept (their batch axis is dynamic from 1)
INT8_SCHEME = "pt2e-xnnpack-symmetric-per-channel"
log = logging.getLogger(__name__)


def require_executorch() -> None:
    """A one-line UserError naming the extra when ExecuTorch is not installed."""
    require("executorch", "mobile")


def exported(model: torch.nn.Module, example: torch.Tensor):  # model in eval mode (PT2E graphs refuse .eval())
    """torch.export of an eval-mode model with a dynamic batch axis. The example is made contiguous: a program
    traced on a strided (e.g. channels-last) example expects that memory order and misreads NCHW input."""
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    return torch.export.export(model, (example[:2].contiguous(),), dynamic_shapes=({0: batch},))


def lower(program, path: Path) -> Path:
    """Lower an exported program to XNNPACK and write the .pte whole."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    buffer = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch().buffer
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer)
    return path


def export_pte(fused: torch.nn.Module, example: torch.Tensor, path: Path) -> Path:
    """The fused fp32 model as an XNNPACK .pte."""
    require_executorch()
    return lower(exported(fused.eval(), example), path)


def export_pte_int8(fused: torch.nn.Module, calibration: np.ndarray, path: Path, batch_size: int = 16) -> Path:
    """The fused model quantized to int8 (symmetric, per-channel weights; XNNPACK's quantizer), calibrated on
    `calibration` (network inputs, NCHW float32), as an XNNPACK .pte."""
    require_executorch()
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    example = torch.from_numpy(calibration[:2])
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(exported(fused.eval(), example).module(), quantizer)
    with torch.no_grad():
        for start in range(0, len(calibration), batch_size):
            prepared(torch.from_numpy(calibration[start : start + batch_size]))
    return lower(exported(convert_pt2e(prepared), example), path)


class PteModel:
    """A .pte program loaded in ExecuTorch's runtime: logits for NCHW float32 batches of any size."""

    def __init__(self, path: Path):
        require_executorch()
        from executorch.runtime import Runtime

        if not path.is_file():
            raise UserError(
                f"{path}: no such ExecuTorch program; export it with `kvasir export RUN --format executorch`."
            )
        self.path = path
        self.method = Runtime.get().load_program(path).load_method("forward")
        self.max_batch = int(self.method.metadata.input_tensor_meta(0).sizes()[0])  # the plan's upper bound

    def outputs(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(logits, features); features None for a program exported before it had them."""
        step = self.max_batch
        chunks = [
            self.method.execute([torch.from_numpy(np.ascontiguousarray(batch[i : i + step]))])
            for i in range(0, len(batch), step)
        ]
        logits = np.concatenate([c[0].numpy() for c in chunks])
        return logits, np.concatenate([c[1].numpy() for c in chunks]) if len(chunks[0]) > 1 else None

    def logits(self, batch: np.ndarray) -> np.ndarray:
        return self.outputs(batch)[0]


def pte_int8_for_run(fused: torch.nn.Module, images, out_dir: Path, max_accuracy_drop: float, force: bool) -> dict:
    """model.int8.pte: calibrated on the same training images as the ONNX int8 model, checked on the run's test
    images against model.pte (agreement, max logit difference, accuracy change with its interval, McNemar) and
    written only when `quantize.decide` accepts it, the ONNX int8 model's rule."""
    from kvasir_mobileone.deploy.quantize import accept, check

    log.info(f"ExecuTorch int8: calibration on {len(images.calibration)} training images and lowering ...")
    candidate = out_dir / f".{PTE_INT8_NAME}"
    export_pte_int8(fused, images.calibration, candidate)
    fp32, int8 = PteModel(out_dir / PTE_NAME), PteModel(candidate)
    figures = check(fp32.logits(images.test), int8.logits(images.test), images.targets)
    shape = (1, *images.test.shape[1:])
    figures |= {
        "file": PTE_INT8_NAME,
        "config": INT8_SCHEME,
        "fp32_layers": [],
        "calibration_images": int(len(images.calibration)),
        "fp32_ms_batch1": latency_ms(fp32.logits, shape),
        "int8_ms_batch1": latency_ms(int8.logits, shape),
    } | images.provenance()
    figures["speedup_batch1"] = figures["fp32_ms_batch1"] / figures["int8_ms_batch1"]
    del int8
    return accept(figures, candidate, out_dir / PTE_INT8_NAME, max_accuracy_drop, force)
