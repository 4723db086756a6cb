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
