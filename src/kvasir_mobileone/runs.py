"""The run folder contract: its layout, creating it (rank zero only), resolving a run folder or a checkpoint, and
reading its configuration and checkpoint; the files of a test report (predictions.csv read and written here), a
`kvasir cv` folder (its folds), an audit (audit.json read and written here) and a bundle. No other module spells a
run file's name (tests/test_structure.py holds it so, from the names below).

Paths a run records are absolute (the data folder, a reused manifest); files inside the run are found relative to
the run folder, so a run works from any working directory and after being moved or copied.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from kvasir_mobileone.errors import UserError
from kvasir_mobileone.io import read_csv, write_csv, write_json, write_text

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
    "`unlabeled_left_out.csv`": (
        "the frames of `--data.unlabeled_dir` left out, with the reason: unreadable, or a near-duplicate of a val or "
        "test image (only with `--data.unlabeled_dir`)"
    ),
    "`checkpoints/best.ckpt`": (
        "best by `--trainer.monitor` (val macro-F1 by default); stands alone (model name, classes, input size, "
        "mean/std, interpolation, evaluation precision, the run's config, the fitted out-of-distribution detector, "
        "abstention threshold and conformal quantile)"
    ),
    "`checkpoints/last.ckpt`": "end of the last epoch, for `--resume`",
    "`test/`": (
        "`report.md`, `metrics.json`, `predictions.csv`, per-class tables, confusion matrices, reliability "
        "diagram; metrics on all test images and on the leak-free ones; out-of-distribution scores, "
        "risk-coverage curves and prediction-set coverage"
    ),
    "`model_info.json`": (
        "parameters before/after fusing; the field of view's SHA-256 and share of the input, its quantile and, "
        "with `--data.view_quantile auto`, each view tried (`view_levels`); the teacher (name, source, SHA-256) and "
        "the unlabeled frames found, used and left out; after `kvasir export`: sizes and onnxruntime latency"
    ),
    "`temperature.json`": "softmax temperature fitted on val by `kvasir test --calibrate true`",
    "`audit/`": (
        "`kvasir audit`'s report, figures and verdict; when the frame tells the class, a proposed "
        "`field_of_view.png` and, in the report, one `kvasir fit` line"
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
    predictions = property(lambda self: self.root / PREDICTIONS_NAME)
    report = property(lambda self: self.root / REPORT_NAME)
    per_class_csv = property(lambda self: self.root / "per_class.csv")
    per_class_md = property(lambda self: self.root / "per_class.md")
    confusion_csv = property(lambda self: self.root / "confusion_matrix.csv")
    confusion_png = property(lambda self: self.root / "confusion_matrix.png")
    confusion_rates_png = property(lambda self: self.root / "confusion_matrix_normalized.png")
    reliability_png = property(lambda self: self.root / "reliability.png")
    model_input_png = property(lambda self: self.root / "model_input.png")
    risk_coverage_png = property(lambda self: self.root / "risk_coverage.png")
    ood_scores_png = property(lambda self: self.root / "ood_scores.png")

    def write_predictions(self, predictions: Predictions) -> Path:
        return write_predictions(self.predictions, predictions)

    def read_predictions(self) -> Predictions:
        return read_predictions(self.predictions)


@dataclass(frozen=True)
class Predictions:
    """predictions.csv: one row per test image, its path (relative to the data folder), given label, predicted
    class and every class's probability (columns p_<class>)."""

    paths: list[str]
    class_names: list[str]
    targets: np.ndarray  # index into class_names
    predicted: np.ndarray
    probs: np.ndarray  # N x classes


PROBABILITY_PREFIX = "p_"


def write_predictions(path: Path, predictions: Predictions) -> Path:
    names = predictions.class_names
    rows = [
        [p, names[t], names[y], *np.round(pr, 6)]
        for p, t, y, pr in zip(
            predictions.paths, predictions.targets, predictions.predicted, predictions.probs, strict=True
        )
    ]
    return write_csv(path, ["path", "label", "predicted", *[f"{PROBABILITY_PREFIX}{c}" for c in names]], rows)


def read_predictions(path: Path) -> Predictions:
    rows = read_csv(path)
    if not rows:
        raise RunError(f"{path} holds no predictions: run `kvasir test` again.")
    names = [k.removeprefix(PROBABILITY_PREFIX) for k in rows[0] if k.startswith(PROBABILITY_PREFIX)]
    index = {c: i for i, c in enumerate(names)}
    return Predictions(
        [r["path"] for r in rows],
        names,
        np.array([index[r["label"]] for r in rows]),
        np.array([index[r["predicted"]] for r in rows]),
        np.array([[float(r[f"{PROBABILITY_PREFIX}{c}"]) for c in names] for r in rows]),
    )


PREDICTIONS_NAME = "predictions.csv"  # a test report's (write_predictions below)
PREDICT_NAME = "answers.csv"  # `kvasir predict --out DIR`'s for still images (deploy/predict.Prediction's rows)
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
    unlabeled_left_out = property(lambda self: self.root / "unlabeled_left_out.csv")
    field_of_view = property(lambda self: self.root / FIELD_OF_VIEW_NAME)
    checkpoints = property(lambda self: self.root / "checkpoints")
    best = property(lambda self: self.root / "checkpoints" / "best.ckpt")
    last = property(lambda self: self.root / "checkpoints" / "last.ckpt")
    test_dir = property(lambda self: self.root / "test")
    test = property(lambda self: TestReport(self.root / "test"))
    model_info = property(lambda self: self.root / "model_info.json")
    temperature = property(lambda self: self.root / "temperature.json")
    features_dir = property(lambda self: self.root / "features")
    features = property(lambda self: self.root / "features" / FEATURES_NAME)
    classical_summary = property(lambda self: self.root / "features" / CLASSICAL_SUMMARY_NAME)
    audit = property(lambda self: AuditFolder(self.root / "audit"))
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


FEATURES_NAME, CLASSICAL_SUMMARY_NAME = "features.npz", "classical_summary.json"  # in RUN/features/
# per-class maps of frame and overlay pixels (an audit's, and `kvasir eda --frames`' where it writes them)
FRAME_MAPS_PNG, FRAME_MAPS_JSON = "frame_maps.png", "frame_maps.json"
FOLD_PREFIX = "fold"  # a cv folder's fold k is the run folder fold<k>, its split fold<k>_manifest.csv
# what a cv folder's config.yaml holds besides a run's: the fold numbers (label-issues needs a cv folder)
FOLDS_KEY = "folds"


@dataclass(frozen=True)
class CvFolder(RunFolder):
    """A `kvasir cv` folder: config.yaml (with the folds), one run folder per fold, the pooled out-of-fold test
    report in test/, the summary, and label_issues/."""

    summary_json = property(lambda self: self.root / "cv_summary.json")
    summary_md = property(lambda self: self.root / "cv_summary.md")

    def fold_name(self, k: int) -> str:
        return f"{FOLD_PREFIX}{k}"

    def fold(self, k: int) -> RunFolder:
        return RunFolder(self.root / self.fold_name(k))

    def fold_manifest(self, k: int) -> Path:
        return self.root / f"{self.fold_name(k)}_manifest.csv"

    def fold_ids(self) -> list[int]:
        """The folds that have a run folder here, in order."""
        pattern = re.compile(rf"{FOLD_PREFIX}(\d+)")
        return sorted(int(m.group(1)) for d in self.root.iterdir() if d.is_dir() and (m := pattern.fullmatch(d.name)))


@dataclass(frozen=True)
class AuditFolder:
    """`kvasir audit`'s folder (RUN/audit/ or --out): report.md, audit.json, its figures, and a proposed field of
    view when the frame tells the class."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    report = property(lambda self: self.root / REPORT_NAME)
    result = property(lambda self: self.root / "audit.json")
    frame_maps_png = property(lambda self: self.root / FRAME_MAPS_PNG)
    occlusion_png = property(lambda self: self.root / "occlusion.png")
    frame_swap_png = property(lambda self: self.root / "frame_swap.png")
    residual_png = property(lambda self: self.root / "residual_in_view.png")  # frame and overlays left in the view
    baseline_map_png = property(lambda self: self.root / "baseline_weights.png")  # where the baseline reads a class
    proposed_view = property(lambda self: self.root / FIELD_OF_VIEW_NAME)

    def write_result(self, result: dict) -> Path:
        return write_json(self.result, result)

    def read_result(self) -> dict | None:
        return json.loads(self.result.read_text()) if self.result.is_file() else None

    def summary(self, checkpoint_sha256: str) -> dict:
        """What a bundle's metadata and card carry of the audit of this checkpoint: {status: audited, n, verdict,
        depends: [region, drop, interval, Holm p], baseline, frame_swap}; status "not audited" when none was run,
        "stale" when the audit was run on another checkpoint."""
        found = self.read_result()
        if found is None:
            return {"status": "not audited"}
        if found.get("checkpoint_sha256") != checkpoint_sha256:
            return {"status": "stale"}
        depends = [
            {k: r[k] for k in ("region", "accuracy_drop", "accuracy_drop_ci", "p_holm")}
            for r in found["regions"]
            if r["depends"]
        ]
        baseline = {k: found["shortcut_baseline"][k] for k in ("accuracy", "accuracy_ci", "chance", "finding")}
        swap = found.get("frame_swap") or {}
        frame_swap = (
            {k: swap[k] for k in ("n", "follow_donor", "donor_class_as_is", "p_value", "follows")}
            if swap.get("status") == "measured"
            else None
        )
        return {
            "status": "audited",
            "n": found["n"],
            "verdict": found["verdict"],
            "depends": depends,
            "baseline": baseline,
            "frame_swap": frame_swap,
        }


# a bundle's files (`kvasir export`): the fused model for onnxruntime, its weights, metadata.json (input, checks,
# provenance), int8 and on-device models, and the model card with timm's config and the training-time weights
ONNX_NAME, WEIGHTS_NAME, METADATA_NAME = "model.onnx", "model.safetensors", "metadata.json"
INT8_NAME = "model.int8.onnx"
PTE_NAME, PTE_INT8_NAME = "model.pte", "model.int8.pte"
COREML_NAME = "model.mlpackage"
# `kvasir predict VIDEO --out DIR`: every classified frame, the smoothed segments, the timeline, the run's summary
VIDEO_FRAMES_NAME, VIDEO_SEGMENTS_NAME = "frames.csv", "segments.csv"
VIDEO_TIMELINE_NAME, VIDEO_SUMMARY_NAME = "timeline.png", "summary.json"
VIDEO_ANNOTATED_NAME = "annotated.mp4"  # with --annotate true: the video with its smoothed label drawn on
UNCERTAINTY_NAME = "uncertainty.npz"  # the out-of-distribution detector's arrays (answers.Uncertainty.arrays)
CARD_NAME, CONFIG_NAME, UNFUSED_NAME = "README.md", "config.json", "model_unfused.safetensors"


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
