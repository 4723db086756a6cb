"""`kvasir fit`: build data, model, callbacks, loggers and trainer; fit; test the best checkpoint."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, TQDMProgressBar

from kvasir_mobileone.data import (
    DataConfig,
    ImageFolderDataModule,
    load_or_make_manifest,
    split_counts,
    write_manifest,
)
from kvasir_mobileone.io import markdown_table, write_json, write_yaml
from kvasir_mobileone.model import MobileOneClassifier, ModelConfig, normalization_of

MANIFEST_NAME = "split_manifest.csv"
CONFIG_NAME = "config.yaml"
WANDB_PROJECT = "kvasir-mobileone"


@dataclass
class TrainerConfig:
    """Lightning Trainer settings and where the run folder goes."""

    max_epochs: int = 30
    accelerator: str = "auto"
    devices: int | str = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str | None = None  # None: 16-mixed on CUDA, bf16-mixed on a CPU with native bf16, else 32-true
    logger: Literal["wandb", "tensorboard", "csv", "none"] = "wandb"
    runs_dir: str = "runs"
    run_name: str | None = None  # default: <date>-<time>-<model name>
    seed: int = 42
    deterministic: bool = False
    limit_train_batches: float | int = 1.0
    limit_val_batches: float | int = 1.0
    log_every_n_steps: int = 10


def auto_precision(accelerator: str = "auto") -> str:
    """16-bit mixed on CUDA; bf16 autocast on CPUs with native bf16 (AVX-512 BF16 / AMX); else fp32."""
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "16-mixed"
    try:
        cpu_bf16 = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    except (AttributeError, RuntimeError):
        cpu_bf16 = False
    return "bf16-mixed" if cpu_bf16 else "32-true"


def wandb_logged_in() -> bool:
    """True when W&B has credentials (env, settings or netrc), without prompting."""
    import wandb

    try:
        return bool(wandb.login(prompt=False, verify=False))
    except TypeError:  # wandb releases before the `prompt` argument
        return bool(os.environ.get("WANDB_API_KEY"))


def build_logger(kind: str, run_dir: Path, run_name: str):
    """W&B (online when logged in, else offline in the run folder), TensorBoard, CSV, or no logger."""
    from lightning.pytorch import loggers

    if kind == "wandb":
        offline = os.environ.get("WANDB_MODE") == "offline" or not wandb_logged_in()
        # mode= as well as offline=: recent wandb releases no longer read Lightning's WANDB_MODE=dryrun
        logger = loggers.WandbLogger(
            project=WANDB_PROJECT,
            name=run_name,
            save_dir=str(run_dir),
            offline=offline,
            **({"mode": "offline"} if offline else {}),
        )
        if offline:
            print(
                f"W&B: not logged in, logging offline to {run_dir}/wandb. "
                f"Upload later with: wandb sync {run_dir}/wandb/offline-run-*"
            )
        return logger
    if kind == "tensorboard":
        return loggers.TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version="")
    if kind == "csv":
        return loggers.CSVLogger(save_dir=str(run_dir), name="csv_logs", version="")
    return False


def build_trainer(cfg: TrainerConfig, run_dir: Path, logger=False, callbacks=()) -> L.Trainer:
    return L.Trainer(
        default_root_dir=str(run_dir),
        max_epochs=cfg.max_epochs,
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        num_nodes=cfg.num_nodes,
        strategy=cfg.strategy,
        precision=cfg.precision or auto_precision(cfg.accelerator),
        logger=logger,
        callbacks=[TQDMProgressBar(), *callbacks],
        deterministic=cfg.deterministic,
        limit_train_batches=cfg.limit_train_batches,
        limit_val_batches=cfg.limit_val_batches,
        log_every_n_steps=cfg.log_every_n_steps,
    )


def new_run_dir(cfg: TrainerConfig, model_name: str) -> Path:
    name = cfg.run_name or f"{dt.datetime.now():%Y%m%d-%H%M%S}-{model_name}"
    run_dir = Path(cfg.runs_dir) / name
    if (run_dir / CONFIG_NAME).exists():
        raise FileExistsError(f"Run folder {run_dir} already holds a run; choose another --trainer.run_name.")
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def print_split_counts(counts: dict[str, dict[str, int]]) -> None:
    classes = list(next(iter(counts.values())))
    rows = [[c, *(counts[s][c] for s in counts)] for c in classes]
    rows.append(["total", *(sum(counts[s].values()) for s in counts)])
    print(markdown_table(["class", *counts], rows))


def fit(
    data: DataConfig = DataConfig(),
    model: ModelConfig = ModelConfig(),
    trainer: TrainerConfig = TrainerConfig(),
    test_after: bool = True,
) -> Path:
    """Train a classifier; writes a run folder (config, split manifest, checkpoints, logs, test report)."""
    L.seed_everything(trainer.seed, workers=True)

    rows = load_or_make_manifest(data)
    run_dir = new_run_dir(trainer, model.name)
    config = {
        "data": dataclasses.asdict(data),
        "model": dataclasses.asdict(model),
        "trainer": dataclasses.asdict(trainer),
    }
    write_yaml(run_dir / CONFIG_NAME, config)
    write_manifest(run_dir / MANIFEST_NAME, rows)
    counts = split_counts(rows)
    write_json(run_dir / "split_counts.json", counts)
    print_split_counts(counts)

    module = MobileOneClassifier(sorted(counts["train"]), model, max_epochs=trainer.max_epochs)
    datamodule = ImageFolderDataModule(data, rows, normalization_of(module.backbone, data.image_size))
    logger = build_logger(trainer.logger, run_dir, run_dir.name)
    callbacks = [
        ModelCheckpoint(
            dirpath=run_dir / "checkpoints",
            filename="best",
            monitor="val/acc",
            mode="max",
            save_last=True,
            auto_insert_metric_name=False,
        )
    ]
    if logger:
        callbacks.append(LearningRateMonitor(logging_interval="epoch"))
    lightning_trainer = build_trainer(trainer, run_dir, logger, callbacks)
    lightning_trainer.fit(module, datamodule=datamodule)
    print(f"Run folder: {run_dir}")
    if test_after and lightning_trainer.is_global_zero:
        from kvasir_mobileone.evaluate import test

        test(run_dir, accelerator=trainer.accelerator, precision=trainer.precision)
    return run_dir


def load_run_config(run_dir: str | Path) -> dict:
    import yaml

    path = Path(run_dir) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {run_dir} is not a run folder made by `kvasir fit`.")
    return yaml.safe_load(path.read_text())
