"""The flags of the tiny trainings the tests run, in one place: every test trains the same way unless it says how
it differs (resnet10t learns the synthetic shapes in seconds; MobileOne from scratch needs minutes)."""

from __future__ import annotations


def fit_flags(
    model: str = "resnet10t",
    batch_size: int = 16,
    lr: float | None = 0.003,
    epochs: int | None = None,
    logger: str | None = "none",
    test_fraction: float | None = None,
    image_size: int = 32,
) -> list[str]:
    """`kvasir fit` flags for a CPU-only, fp32, single-process training from scratch; None leaves a flag out (the
    tool's default)."""
    flags = {
        "--data.image_size": image_size,
        "--data.batch_size": batch_size,
        "--data.num_workers": 0,
        "--data.test_fraction": test_fraction,
        "--model.lr_reference_batch": batch_size,
        "--model.name": model,
        "--model.pretrained": "false",
        "--model.lr": lr,
        "--trainer.precision": "32-true",
        "--trainer.max_epochs": epochs,
        "--trainer.logger": logger,
    }
    return [str(v) for flag, value in flags.items() if value is not None for v in (flag, value)]


def fit_run(data_dir, runs_dir, name: str, *extra: str, flags: list[str] | None = None):
    """`kvasir fit` of data_dir into runs_dir/name (no test logger) with `flags` (default: 8 epochs, 30% test) and
    `extra`; its run folder. A twin on the same split: extra = ("--data.manifest", str(run / "split_manifest.csv"))."""
    from pathlib import Path

    from kvasir_mobileone.cli import main

    flags = fit_flags(epochs=8, test_fraction=0.3) if flags is None else flags
    main(
        ["fit", "--data.data_dir", str(data_dir), *flags, "--trainer.runs_dir", str(runs_dir)]
        + ["--trainer.run_name", name, *extra]
    )
    return Path(runs_dir) / name
