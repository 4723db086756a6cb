"""The run folder contract: its layout, creating it (rank zero only), resolving a run folder or a checkpoint, and
reading its configuration and checkpoint. No other module spells a run file's name.

Paths a run records are absolute (the data folder, a reused manifest); files inside the run are found relative to
the run folder, so a run works from any working directory and after being moved or copied.
"""

from __future__ import annotations

import datetime as dt
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import yaml

from kvasir_mobileone.errors import UserError
from kvasir_mobileone.io import write_text

RUN_DIR_ENV = "KVASIR_RUN_DIR"  # how processes that Lightning launches for DDP find the run folder of rank 0

# file or folder -> what it holds: the README's run-folder table is this one (a test holds them equal)
LAYOUT = {
    "`config.yaml`": (
        "the resolved configuration (data, model, trainer); paths in it are absolute; reusable with `kvasir "
        "fit --config`"
    ),
    "`split_manifest.csv`": (
        "path, label, split and near-duplicate group of every image (reuse it with `--data.manifest`)"
    ),
    "`split_leaks.csv`": "near-duplicate groups whose images sit in more than one split (only when there are any)",
    "`split_counts.json`": "images per split and class, and the classes missing from a split",
    "`excluded.csv`": "images left out of every split by `--data.exclude` (only when given)",
    "`field_of_view.png`": (
        "the common field of view at the network input size, white where the model sees the image (only with "
        "`--data.field_of_view`); the checkpoint holds the same bits and their SHA-256"
    ),
    "`data_problems.csv`": (
        "every file left out or skipped, with the reason: excluded by the check, skipped in training, "
        "duplicates, conversions"
    ),
    "`checkpoints/best.ckpt`": (
        "best by `--trainer.monitor` (val macro-F1 by default); stands alone (model name, classes, input size, "
        "mean/std, interpolation, evaluation precision, the run's config)"
    ),
    "`checkpoints/last.ckpt`": "end of the last epoch, for `--resume`",
    "`test/`": (
        "`report.md`, `metrics.json`, `predictions.csv`, per-class tables, confusion matrices, reliability "
        "diagram; metrics on all test images and on the leak-free ones"
    ),
    "`model_info.json`": (
        "parameters before/after fusing; the field of view's SHA-256 and share of the input; after `kvasir export`: "
        "sizes and onnxruntime latency"
    ),
    "`temperature.json`": "softmax temperature fitted on val by `kvasir test --calibrate true`",
    "`audit/`": (
        "`kvasir audit`'s report, figures and verdict; when the frame tells the class, a proposed "
        "`field_of_view.png` for `fit`"
    ),
    "`features/`": "`kvasir features`' embeddings and the classical models' results",
    "`wandb/`, `tensorboard/`, `csv_logs/`": (
        "the logger's files: train/loss, train/acc, val/loss, val/acc, val/f1_macro, val/balanced_acc, learning rate"
    ),
}


@dataclass(frozen=True)
class TestReport:
    """The files of a test report folder (RUN/test/, a cv folder's test/, or `kvasir test --out DIR`)."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    metrics = property(lambda self: self.root / "metrics.json")
    predictions = property(lambda self: self.root / "predictions.csv")
    report = property(lambda self: self.root / REPORT_NAME)
    per_class_csv = property(lambda self: self.root / "per_class.csv")
    per_class_md = property(lambda self: self.root / "per_class.md")
    confusion_csv = property(lambda self: self.root / "confusion_matrix.csv")
    confusion_png = property(lambda self: self.root / "confusion_matrix.png")
    confusion_rates_png = property(lambda self: self.root / "confusion_matrix_normalized.png")
    reliability_png = property(lambda self: self.root / "reliability.png")
    model_input_png = property(lambda self: self.root / "model_input.png")


REPORT_NAME = "report.md"  # every report folder's main page: a test report's, an audit's
FIELD_OF_VIEW_NAME = "field_of_view.png"  # in a run folder and in a bundle
LEAKS_NAME = "split_leaks.csv"  # in a run folder, and in `kvasir check --out DIR`
LOGGER_FOLDERS = {"wandb": "wandb", "tensorboard": "tensorboard", "csv": "csv_logs"}  # --trainer.logger -> folder


class RunError(UserError):
    """Not a run folder or checkpoint, or a path the run needs is gone."""


class UnsafeCheckpointError(UserError):
    """A checkpoint holds more than tensors and plain data; loading it could run code, so it is refused."""


@dataclass(frozen=True)
class RunFolder:
    """The files of one run folder."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    config = property(lambda self: self.root / "config.yaml")
    manifest = property(lambda self: self.root / "split_manifest.csv")
    split_counts = property(lambda self: self.root / "split_counts.json")
    problems = property(lambda self: self.root / "data_problems.csv")
    leaks = property(lambda self: self.root / LEAKS_NAME)
    excluded = property(lambda self: self.root / "excluded.csv")
    field_of_view = property(lambda self: self.root / FIELD_OF_VIEW_NAME)
    checkpoints = property(lambda self: self.root / "checkpoints")
    best = property(lambda self: self.root / "checkpoints" / "best.ckpt")
    last = property(lambda self: self.root / "checkpoints" / "last.ckpt")
    test_dir = property(lambda self: self.root / "test")
    test = property(lambda self: TestReport(self.root / "test"))
    audit_dir = property(lambda self: self.root / "audit")
    model_info = property(lambda self: self.root / "model_info.json")
    temperature = property(lambda self: self.root / "temperature.json")
    features_dir = property(lambda self: self.root / "features")
    # a `kvasir cv` folder's: the images whose labels the out-of-fold predictions doubt (kvasir label-issues)
    label_issues_dir = property(lambda self: self.root / "label_issues")
    label_issues = property(lambda self: self.root / "label_issues" / "label_issues.csv")

    def excluded_count(self) -> int:
        """How many images --data.exclude left out of this run's split (0 without it)."""
        return max(0, len(self.excluded.read_text().splitlines()) - 1) if self.excluded.is_file() else 0

    def is_run(self) -> bool:
        return self.config.is_file()

    def checkpoint(self) -> Path:
        """best.ckpt, else last.ckpt."""
        for ckpt in (self.best, self.last):
            if ckpt.is_file():
                return ckpt
        raise RunError(
            f"No checkpoints/best.ckpt or last.ckpt in {self.root}: is it a run folder made by `kvasir fit`?"
        )

    def read_config(self) -> dict:
        if not self.config.is_file():
            raise RunError(f"{self.config} not found: {self.root} is not a run folder made by `kvasir fit`.")
        return yaml.safe_load(self.config.read_text())

    def write_config(self, config: dict) -> Path:
        header = (
            "# Resolved configuration of this run (kvasir fit). Paths are absolute; the run's own files are found\n"
            "# relative to this folder, so the run can be moved or copied.\n"
        )
        return write_text(self.config, header + yaml.safe_dump(config, sort_keys=False))


def absolute(path: str | os.PathLike | None) -> str | None:
    """The absolute form of a path a run records (None stays None)."""
    return None if path is None else str(Path(path).expanduser().resolve())


def is_rank_zero() -> bool:
    """True in the process that owns the run folder (rank 0 of a DDP job, or the only process)."""
    return all(os.environ.get(k, "0") == "0" for k in ("LOCAL_RANK", "NODE_RANK", "RANK", "SLURM_PROCID"))


def create_run(runs_dir: str | Path, run_name: str | None, model_name: str) -> RunFolder:
    """A new run folder: created by rank 0; other ranks get the same path (from rank 0's environment)."""
    if os.environ.get(RUN_DIR_ENV):
        return RunFolder(Path(os.environ[RUN_DIR_ENV]))
    job = os.environ.get("SLURM_JOB_ID")
    name = run_name or (f"slurm{job}-{model_name}" if job else f"{dt.datetime.now():%Y%m%d-%H%M%S}-{model_name}")
    run = RunFolder(Path(runs_dir).expanduser().resolve() / name)
    if is_rank_zero():
        # a folder whose run died before its first checkpoint holds nothing to keep: start it over
        if run.is_run() and any(run.checkpoints.glob("*.ckpt")):
            raise RunError(
                f"Run folder {run.root} already holds a run: continue it with `kvasir fit --resume {run.root}` or "
                "choose another --trainer.run_name."
            )
        run.root.mkdir(parents=True, exist_ok=True)
        os.environ[RUN_DIR_ENV] = str(run.root)
    return run


def resolve(run_or_ckpt: str | Path) -> tuple[Path, RunFolder | None]:
    """(checkpoint, its run folder or None for a lone checkpoint) for a run folder or a checkpoint path."""
    target = Path(run_or_ckpt)
    if target.is_dir():
        return RunFolder(target).checkpoint(), RunFolder(target)
    if not target.is_file():
        raise RunError(f"{target} is neither a run folder nor a checkpoint file.")
    run = RunFolder(target.parent.parent)
    return target, run if run.is_run() and target.parent == run.checkpoints else None


def read_checkpoint(path: str | Path, map_location: str = "cpu") -> dict:
    """torch.load with weights_only=True: tensors and plain containers only, never code from the file."""
    import torch

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise UnsafeCheckpointError(
            f"Refused to load {path}: it holds Python objects other than tensors and plain data, and unpickling "
            f"them could run code ({str(err).splitlines()[0]}). Only load checkpoints from people you trust; "
            "nothing from the file was executed."
        ) from err
    except (RuntimeError, EOFError, OSError) as err:
        raise RunError(
            f"Cannot read the checkpoint {path} ({err}). Is it a checkpoint written by `kvasir fit`?"
        ) from err


def existing_data_dir(recorded: str | None, override: str | None, what: str, flag: str = "--data_dir") -> Path:
    """The data folder a run reads: `override` when given, else the recorded one; a clear error when it is gone."""
    data_dir = Path(override or recorded or "")
    if not (override or recorded) or not data_dir.is_dir():
        raise RunError(
            f"The data folder {data_dir if (override or recorded) else '(none recorded)'} of {what} is not there "
            f"(moved, deleted, or on another machine). Point {flag} at the folder of class folders."
        )
    return data_dir
