"""`kvasir fit`: build data, model, callbacks, loggers and trainer; fit; test the best checkpoint."""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, TQDMProgressBar

from kvasir_mobileone.check import DataCheckError, check_folder, write_problems
from kvasir_mobileone.data import (
    DataConfig,
    ImageFolderDataModule,
    check_manifest_files,
    make_split,
    read_manifest,
    split_counts,
    write_manifest,
)
from kvasir_mobileone.io import markdown_table, update_json, write_json, write_yaml
from kvasir_mobileone.model import MobileOneClassifier, ModelConfig, normalization_of

MANIFEST_NAME = "split_manifest.csv"
CONFIG_NAME = "config.yaml"
PROBLEMS_NAME = "data_problems.csv"
MODEL_INFO_NAME = "model_info.json"  # parameters before/after fusing; export adds sizes and latency
WANDB_PROJECT = "kvasir-mobileone"


@dataclass
class TrainerConfig:
    """Lightning Trainer settings and where the run folder goes.

    Args:
        max_epochs: epochs to train
        accelerator: cpu, gpu, auto ... (Lightning)
        devices: devices per node: a count, a list or auto (Lightning)
        num_nodes: machines (DDP across nodes)
        strategy: auto, ddp ... (Lightning)
        precision: None: 16-mixed on CUDA, bf16-mixed on a CPU with native bf16, else 32-true
        logger: wandb (offline when not logged in), tensorboard, csv or none
        runs_dir: parent folder of run folders
        run_name: default: <date>-<time>-<model name>
        seed: seed of training (weights, order, augmentation)
        deterministic: deterministic algorithms: same seed, same metrics
        limit_train_batches: fraction or number of training batches per epoch
        limit_val_batches: fraction or number of validation batches per epoch
        log_every_n_steps: logging interval in steps
    """

    max_epochs: int = 30
    accelerator: str = "auto"
    devices: int | str = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str | None = None
    logger: Literal["wandb", "tensorboard", "csv", "none"] = "wandb"
    runs_dir: str = "runs"
    run_name: str | None = None
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


RUN_DIR_ENV = "KVASIR_RUN_DIR"  # how processes that Lightning launches for DDP find the run folder of rank 0


def is_rank_zero() -> bool:
    """True in the process that owns the run folder (rank 0 of a DDP job, or the only process)."""
    return all(os.environ.get(k, "0") == "0" for k in ("LOCAL_RANK", "NODE_RANK", "RANK", "SLURM_PROCID"))


def new_run_dir(cfg: TrainerConfig, model_name: str) -> Path:
    """The run folder: created by rank 0; other ranks get the same path (from rank 0's environment or the name)."""
    if os.environ.get(RUN_DIR_ENV):
        return Path(os.environ[RUN_DIR_ENV])
    job = os.environ.get("SLURM_JOB_ID")
    name = cfg.run_name or (f"slurm{job}-{model_name}" if job else f"{dt.datetime.now():%Y%m%d-%H%M%S}-{model_name}")
    run_dir = Path(cfg.runs_dir) / name
    if is_rank_zero():
        # a folder whose run died before its first checkpoint holds nothing to keep: start it over
        if (run_dir / CONFIG_NAME).exists() and any((run_dir / "checkpoints").glob("*.ckpt")):
            raise FileExistsError(
                f"Run folder {run_dir} already holds a run: continue it with `kvasir fit --resume {run_dir}` or "
                "choose another --trainer.run_name."
            )
        run_dir.mkdir(parents=True, exist_ok=True)
        os.environ[RUN_DIR_ENV] = str(run_dir)
    return run_dir


def print_split_counts(counts: dict[str, dict[str, int]]) -> None:
    classes = list(next(iter(counts.values())))
    rows = [[c, *(counts[s][c] for s in counts)] for c in classes]
    rows.append(["total", *(sum(counts[s].values()) for s in counts)])
    print(markdown_table(["class", *counts], rows))


def prepare_split(data: DataConfig, strict: bool, run_dir: Path) -> list[dict[str, str]]:
    """The split manifest: reused from --data.manifest, or made from a checked folder (unreadable files excluded
    and recorded in the run folder, duplicates kept on one side of the split)."""
    if data.manifest:
        rows = read_manifest(data.manifest)
        check_manifest_files(rows, data.data_dir, data.manifest)
        return rows
    report = check_folder(data.data_dir, data.near_duplicate_bits)
    if report.problems and is_rank_zero():
        write_problems(run_dir / PROBLEMS_NAME, report.problems)
    if report.excluded:
        listing = "; ".join(f"{p.path}: {p.message}" for p in report.excluded[:10])
        if strict:
            raise DataCheckError(f"{len(report.excluded)} unusable files in {data.data_dir} (--strict): {listing}")
        warnings.warn(
            f"Excluded {len(report.excluded)} unusable files from {data.data_dir} (listed in "
            f"{run_dir / PROBLEMS_NAME}; --strict makes this an error): {listing}",
            stacklevel=2,
        )
    return make_split(report.items, data.val_fraction, data.test_fraction, data.seed, report.group_of())


def fit(
    data: DataConfig = DataConfig(),
    model: ModelConfig = ModelConfig(),
    trainer: TrainerConfig = TrainerConfig(),
    test_after: bool = True,
    strict: bool = False,
    resume: str | None = None,
) -> Path:
    """Train a classifier; writes a run folder (config, split manifest, checkpoints, logs, test report).

    --resume RUN_DIR continues an interrupted run from its last checkpoint with the run's own configuration."""
    inherited = os.environ.get(RUN_DIR_ENV)  # set for the processes Lightning launches for DDP
    try:
        return _fit(data, model, trainer, test_after, strict, resume)
    finally:
        if inherited is None:  # the next fit in this process gets a run folder of its own
            os.environ.pop(RUN_DIR_ENV, None)


def _fit(data, model, trainer, test_after, strict, resume) -> Path:
    ckpt_path = None
    if resume:
        run_dir = Path(resume)
        config = load_run_config(run_dir)
        data, model, trainer = (DataConfig(**config["data"]), ModelConfig(**config["model"]),
                                TrainerConfig(**config["trainer"]))  # fmt: skip
        ckpt_path = run_dir / "checkpoints" / "last.ckpt"
        if not ckpt_path.is_file():
            raise FileNotFoundError(
                f"{ckpt_path} not found: the run stopped before its first epoch ended. Start again."
            )
        rows = read_manifest(run_dir / MANIFEST_NAME)
        check_manifest_files(rows, data.data_dir, run_dir / MANIFEST_NAME)
        os.environ[RUN_DIR_ENV] = str(run_dir)
    else:
        run_dir = new_run_dir(trainer, model.name)
        rows = prepare_split(data, strict, run_dir)
        if is_rank_zero():
            config = {k: dataclasses.asdict(v) for k, v in (("data", data), ("model", model), ("trainer", trainer))}
            write_yaml(run_dir / CONFIG_NAME, config)
            write_manifest(run_dir / MANIFEST_NAME, rows)
            write_json(run_dir / "split_counts.json", split_counts(rows))
    L.seed_everything(trainer.seed, workers=True)
    counts = split_counts(rows)
    if is_rank_zero():
        print_split_counts(counts)

    module = MobileOneClassifier(sorted(counts["train"]), model, max_epochs=trainer.max_epochs)
    datamodule = ImageFolderDataModule(data, rows, normalization_of(module.backbone, data.image_size))
    logger = build_logger(trainer.logger, run_dir, run_dir.name)
    checkpoints = run_dir / "checkpoints"
    callbacks = [
        # best val accuracy; no version counter, so a resumed run overwrites best.ckpt instead of adding best-v1
        ModelCheckpoint(checkpoints, "best", monitor="val/acc", mode="max", enable_version_counter=False),
        # every epoch's end, for --resume (save_last=True follows only improvements of the monitored metric)
        ModelCheckpoint(checkpoints, "last", monitor=None, save_top_k=1, enable_version_counter=False),
    ]
    if logger:
        callbacks.append(LearningRateMonitor(logging_interval="epoch"))
    lightning_trainer = build_trainer(trainer, run_dir, logger, callbacks)
    # weights_only: resuming never unpickles code from a checkpoint file
    lightning_trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    if test_after:
        lightning_trainer.test(module, datamodule=datamodule, ckpt_path="best", weights_only=True, verbose=False)
        if lightning_trainer.is_global_zero:
            from kvasir_mobileone.evaluate import report_test_predictions

            report_test_predictions(module, rows, run_dir / "test")
    if lightning_trainer.is_global_zero:
        from kvasir_mobileone.export import parameter_info

        update_json(run_dir / MODEL_INFO_NAME, parameter_info(copy.deepcopy(module.backbone).cpu().float()))
        print(f"Run folder: {run_dir}")
    return run_dir


def load_run_config(run_dir: str | Path) -> dict:
    import yaml

    path = Path(run_dir) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {run_dir} is not a run folder made by `kvasir fit`.")
    return yaml.safe_load(path.read_text())
