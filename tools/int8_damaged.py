"""The int8 verdict on a deliberately damaged model: a run's fp32 ONNX quantized with calibration on blank frames
(every activation range measured on black images, so real frames saturate), checked on the run's test images like
`kvasir export --quantize int8` does, and judged by the same rule. Prints the verdict; writes nothing in the run.

    python tools/int8_damaged.py RUN_DIR [--blank 0.0]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from kvasir_mobileone.deploy.export import fused_onnx
from kvasir_mobileone.deploy.quantize import DEFAULT_CONFIG, Int8Refused, build_int8, decide, network_inputs
from kvasir_mobileone.models.loading import open_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--blank", type=float, default=0.0, help="the calibration frames' normalized value")
    parser.add_argument("--max_accuracy_drop", type=float, default=0.01)
    args = parser.parse_args()
    trained = open_run(args.run)
    rows, _ = trained.manifest_rows()
    test_rows = [r for r in rows if r["split"] == "test"]
    data_dir = trained.data_dir()
    test_images = network_inputs([data_dir / r["path"] for r in test_rows], trained.model_input)
    index = {c: i for i, c in enumerate(trained.module.class_names)}
    targets = np.array([index[r["label"]] for r in test_rows])
    blank = np.full((64, *test_images.shape[1:]), args.blank, np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        import torch

        fp32 = Path(tmp) / "model.onnx"
        fused_onnx(trained.module.backbone.float().eval(), torch.from_numpy(test_images[:8]), fp32, 17)
        figures = build_int8(fp32, Path(tmp) / "int8.onnx", blank, test_images, targets, DEFAULT_CONFIG, 0)
    try:
        decided = decide(figures, args.max_accuracy_drop, force=False)
        print(decided["summary"])
    except Int8Refused as refused:
        print(refused)


if __name__ == "__main__":
    main()
