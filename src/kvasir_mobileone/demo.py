"""`kvasir demo`: the whole workflow on synthetic data, on a CPU, in a few minutes."""

from __future__ import annotations

import time
from pathlib import Path

from kvasir_mobileone.data import DataConfig
from kvasir_mobileone.eda import eda
from kvasir_mobileone.model import ModelConfig
from kvasir_mobileone.synth import synth
from kvasir_mobileone.train import MANIFEST_NAME, TrainerConfig, fit


def demo(
    out: str = "demo_out",
    images_per_class: int = 50,
    model: str = "mobileone_s0",
    image_size: int = 64,
    max_epochs: int = 8,
    logger: str = "wandb",
    seed: int = 0,
) -> Path:
    """synth -> eda -> fit (from scratch, small images) -> test -> report. Prints where the report is."""
    start = time.perf_counter()
    out_dir = Path(out)
    data_dir = out_dir / "data"
    if not data_dir.is_dir():
        synth(str(data_dir), images_per_class=images_per_class, seed=seed)
    run_dir = fit(
        DataConfig(data_dir=str(data_dir), image_size=image_size, batch_size=32, seed=seed),
        ModelConfig(name=model, pretrained=False, lr=2e-3),
        TrainerConfig(max_epochs=max_epochs, logger=logger, runs_dir=str(out_dir / "runs"), seed=seed),
    )
    eda(str(data_dir), out=str(out_dir / "eda"), manifest=str(run_dir / MANIFEST_NAME))
    print(
        f"\nDemo done in {time.perf_counter() - start:.0f} s on synthetic data (not endoscopy images).\n"
        f"  report: {run_dir / 'test' / 'report.md'}\n  eda:    {out_dir / 'eda'}\n  run:    {run_dir}"
    )
    return run_dir
