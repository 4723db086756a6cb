"""`kvasir fit`: build data, model, callbacks, loggers and trainer; fit; test the best checkpoint."""

from __future__ import annotations

import copy
import dataclasses
import os
import warnings
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint

from kvasir_mobileone.answers import UncertaintyConfig
from kvasir_mobileone.data.catalog import OFFICIAL_SPLITS
from kvasir_mobileone.data.check import DataCheckError, Problem, add_problems, check_split, write_problems
from kvasir_mobileone.data.datamodule import DataConfig, ImageFolderDataModule, auto_loader, default_batch_size
from kvasir_mobileone.data.field_of_view import field_of_view_for, write_view_png
from kvasir_mobileone.data.split import (
    check_manifest_files,
    describe_gaps,
    describe_leaks,
    leak_free_test,
    read_exclusions,
    read_manifest,
    split_counts,
    split_gaps,
    write_leaks,
    write_manifest,
)
from kvasir_mobileone.errors import UserError
from kvasir_mobileone.evaluation.outputs import calibrate, run_test
from kvasir_mobileone.evaluation.testing import report_test_predictions, test_summary
from kvasir_mobileone.images import ModelInput, encode_view, view_sha256
from kvasir_mobileone.io import markdown_table, update_json, write_csv, write_json
from kvasir_mobileone.models.backbone import model_input_for, parameter_info
from kvasir_mobileone.models.classifier import (
    Classifier,
    ModelConfig,
    inductor_cache_dir,
    store_uncertainty,
)
from kvasir_mobileone.models.trainer import (
    MONITOR_MODES,
    TrainerConfig,
    WeightAverage,
    auto_precision,
    build_logger,
    build_trainer,
    evaluation_precision,
    speed_settings,
    training_devices,
)
from kvasir_mobileone.runs import (
    RUN_DIR_ENV,
    RunError,
    RunFolder,
    absolute,
    create_run,
    existing_data_dir,
    is_rank_zero,
)


class SkippedImagesReport(Callback):
    """After each training epoch: training images that could not be read are printed and added to
    RUN/data_problems.csv (each once), so that nothing is dropped silently."""

    def __init__(self, run: RunFolder):
        self.run = run
        self.reported: set[str] = set()

    def on_train_epoch_end(self, trainer, pl_module):
        skipped = {p: r for p, r in trainer.datamodule.skipped.items() if p not in self.reported}
        if not skipped or not trainer.is_global_zero:
            return
        self.reported |= set(skipped)
        listing = "; ".join(f"{p}: {r}" for p, r in skipped.items())
        warnings.warn(
            f"Skipped {len(skipped)} unreadable training images this epoch ({listing}); listed in {self.run.problems}.",
            stacklevel=2,
        )
        add_problems(self.run.problems, [Problem(p, "skipped-in-training", r, "error") for p, r in skipped.items()])


def print_split_counts(counts: dict[str, dict[str, int]]) -> None:
    classes = list(next(iter(counts.values())))
    rows = [[c, *(counts[s][c] for s in counts)] for c in classes]
    rows.append(["total", *(sum(counts[s].values()) for s in counts)])
    print(markdown_table(["class", *counts], rows))


def prepare_split(data: DataConfig, strict: bool, run: RunFolder) -> list[dict[str, str]]:
    """The checked split with every image's near-duplicate group; problems and leaks recorded in the run folder and
    named on the console; --data.on_leak refuse stops on a split whose near-duplicates straddle it."""
    exclude = read_exclusions(data.exclude, data.data_dir) if data.exclude else frozenset()
    rows, report, official = check_split(data, exclude)
    if exclude and is_rank_zero():
        found = report.excluded_by_request  # the images actually taken out of the split
        write_csv(run.excluded, ["path"], [[p] for p in found])
        print(
            f"Left out of every split: {len(found)} images listed in {data.exclude} (--data.exclude; {run.excluded})."
        )
        if len(found) < len(exclude):
            missing = sorted(exclude - set(found))
            warnings.warn(
                f"{len(missing)} paths of {data.exclude} are not images of the split of {data.data_dir} "
                f"(e.g. {', '.join(missing[:3])}): nothing to leave out for them.",
                stacklevel=2,
            )
    if official and is_rank_zero():
        for line in official.lines():
            print(line)
    if report.problems and is_rank_zero():
        write_problems(run.problems, report.problems)
    listing = "; ".join(f"{p.path}: {p.message}" for p in report.excluded[:10])
    if report.excluded and strict:
        raise DataCheckError(f"{len(report.excluded)} files of {data.data_dir} left out (--strict): {listing}")
    if report.excluded and not data.manifest:
        warnings.warn(
            f"Left out {len(report.excluded)} files of {data.data_dir} (unreadable, or not in the split; listed in "
            f"{run.problems}; --strict makes this an error): {listing}",
            stacklevel=2,
        )
    elif report.excluded:
        warnings.warn(
            f"{len(report.excluded)} training images of {data.manifest} cannot be read (listed in {run.problems}); "
            "training skips them.",
            stacklevel=2,
        )
    report_leaks(rows, run, data.on_leak)
    return rows


def report_leaks(rows: list[dict[str, str]], run: RunFolder, on_leak: str) -> None:
    """Near-duplicate groups with images in more than one split: listed in RUN/split_leaks.csv and named; an error
    with --data.on_leak refuse."""
    message = describe_leaks(rows)
    if message is None:
        return
    if is_rank_zero():
        write_leaks(run.leaks, rows)
    message += f"; listed in {run.leaks}."
    if on_leak == "refuse":
        raise DataCheckError(
            message + " --data.on_leak refuse: use a leak-free split (fit without --data.manifest and "
            "--data.official_split keeps near-duplicates together), or --data.on_leak report."
        )
    clean = len(leak_free_test(rows))
    warnings.warn(
        f"{message} Every test report also gives the metrics on the {clean} leak-free test images.", stacklevel=2
    )


VIEW_CHOICES = ("full", "common")  # --data.field_of_view, besides the path of a field_of_view.png


def with_field_of_view(model_input: ModelInput, data: DataConfig, rows, run: RunFolder, resumed: bool) -> ModelInput:
    """The network's input with --data.field_of_view (data/field_of_view.field_of_view_for), written to
    RUN/field_of_view.png, said on the console and put into the checkpoint."""
    if data.field_of_view == "full":
        return model_input
    visible, view = field_of_view_for(
        data.field_of_view,
        rows,
        data.data_dir,
        model_input.image_size,
        model_input.interpolation,
        data.view_quantile,
        run.field_of_view if resumed else None,
    )
    if is_rank_zero() and not resumed:
        record_view(run, data.field_of_view, visible, view)
    return dataclasses.replace(model_input, field_of_view=encode_view(visible))


def record_view(run: RunFolder, setting: str, visible, view) -> None:
    """The view in the run folder (field_of_view.png, model_info.json; the images it could not read in
    data_problems.csv) and on the console, with the notes of a view derived from the data."""
    if view is None:
        print(f"--data.field_of_view {setting}: the model sees {100 * visible.mean():.1f}% of the input.")
    else:
        print(f"--data.field_of_view common: {view.describe()}; written to {run.field_of_view}.")
        update_json(run.model_info, {"view_quantile": view.quantile, "view_levels": list(view.levels)})
        for note in view.notes:
            warnings.warn(note, stacklevel=3)
        if view.skipped:
            add_problems(run.problems, [Problem(p, "skipped-in-field-of-view", r, "error") for p, r in view.skipped])
            listing = "; ".join(f"{p}: {r}" for p, r in view.skipped[:10])
            warnings.warn(
                f"The field of view was derived from {sum(view.per_class.values())} training images; "
                f"{len(view.skipped)} could not be read and were left out of it (listed in {run.problems}): {listing}",
                stacklevel=3,
            )
    write_view_png(run.field_of_view, visible)
    update_json(run.model_info, {"field_of_view_sha256": view_sha256(visible), "field_of_view": visible.mean()})


def partial_test(trainer: TrainerConfig) -> str | None:
    """Why the test at the end of fit would not see every test image (a report's n is the split's), or None."""
    if trainer.fast_dev_run:
        return "--trainer.fast_dev_run runs one batch of each stage and saves no checkpoint"
    limit = trainer.limit_test_batches  # Lightning: a float is a share of the batches, an int a number of batches
    if limit is not None and not (isinstance(limit, float) and limit == 1.0):
        return f"--trainer.limit_test_batches {limit} can leave test images out"
    return None


def resolved(data: DataConfig, trainer: TrainerConfig) -> tuple[DataConfig, TrainerConfig]:
    """Paths made absolute, and the automatic batch size, precision, compile and memory layout made explicit, as
    the run records them."""
    gpus = training_devices(trainer)
    if data.field_of_view not in VIEW_CHOICES and not Path(data.field_of_view).is_file():
        raise DataCheckError(
            f"--data.field_of_view {data.field_of_view!r}: use full, common, or the path of a field_of_view.png "
            "(a run's; that file is not there)."
        )
    shipped = data.official_split in (None, *OFFICIAL_SPLITS)
    data = dataclasses.replace(
        data,
        data_dir=absolute(data.data_dir),
        manifest=absolute(data.manifest),
        official_split=data.official_split if shipped else absolute(data.official_split),
        cache_dir=absolute(data.cache_dir),
        unlabeled_dir=absolute(data.unlabeled_dir),
        field_of_view=data.field_of_view if data.field_of_view in VIEW_CHOICES else absolute(data.field_of_view),
        loader=auto_loader(data, gpus),
        batch_size=data.batch_size or default_batch_size(gpus > 0),
    )
    compile_mode, channels_last = speed_settings(trainer)
    precision = trainer.precision or auto_precision(trainer.accelerator)
    trainer = dataclasses.replace(trainer, precision=precision, compile=compile_mode, channels_last=channels_last)
    return data, trainer


UNLABELED_NEEDS_TEACHER = "--data.unlabeled_dir needs --model.teacher: unlabeled frames learn the teacher's answers."


def resolved_model(model: ModelConfig) -> ModelConfig:
    """A teacher given as a path, and its weights file, made absolute: the run resumes from any folder."""
    teacher = model.teacher
    if teacher and Path(teacher).exists():
        teacher = str(Path(teacher).resolve())
    return dataclasses.replace(model, teacher=teacher, teacher_weights=absolute(model.teacher_weights))


def fit(
    data: DataConfig = DataConfig(),
    model: ModelConfig = ModelConfig(),
    trainer: TrainerConfig = TrainerConfig(),
    test_after: bool = True,
    strict: bool = False,
    resume: str | None = None,
    data_dir: str | None = None,
    uncertainty: UncertaintyConfig = UncertaintyConfig(),
) -> Path:
    """Train a classifier; writes a run folder (config, split manifest, checkpoints, logs, test report).

    Every Lightning Trainer argument is a --trainer.* flag. --resume RUN_DIR continues an interrupted run from its
    last checkpoint with the run's own configuration (--data_dir when its data folder has moved)."""
    inherited = os.environ.get(RUN_DIR_ENV)  # set for the processes Lightning launches for DDP
    try:
        return _fit(data, model, trainer, test_after, strict, resume, data_dir, uncertainty)
    finally:
        if inherited is None:  # the next fit in this process gets a run folder of its own
            os.environ.pop(RUN_DIR_ENV, None)


def _fit(data, model, trainer, test_after, strict, resume, data_dir, uncertainty) -> Path:
    """The run folder, split and config; the model and its input; Lightning's fit; the test and its report."""
    if resume:
        run, data, model, trainer, uncertainty, rows = resumed_run(resume, data_dir)
    else:
        if data.unlabeled_dir and not model.teacher:  # said before a run folder is made
            raise UserError(UNLABELED_NEEDS_TEACHER)
        data, trainer = resolved(data, trainer)
        model = resolved_model(model)
        run = create_run(trainer.runs_dir, trainer.run_name, model.name)
        rows = prepare_split(data, strict, run)
    parts = (("data", data), ("model", model), ("trainer", trainer), ("uncertainty", uncertainty))
    config = {k: dataclasses.asdict(v) for k, v in parts}
    if not resume and is_rank_zero():
        run.write_config(config)
        write_manifest(run.manifest, rows)
    counts = record_counts(rows, run)
    L.seed_everything(trainer.seed, workers=True)
    model_input = model_input_for(model.name, data.image_size, data.mask_regions)  # the network's input, decided once
    model_input = with_field_of_view(model_input, data, rows, run, resumed=bool(resume))
    model_input = dataclasses.replace(model_input, clean="" if data.clean_frame == "none" else data.clean_frame)
    train_counts = [counts["train"][c] for c in sorted(counts["train"])]
    module = Classifier(
        sorted(counts["train"]),
        model,
        trainer.max_epochs or 1,
        model_input,
        trainer.eval_precision,
        config,
        train_counts,
    )
    if trainer.compile != "off":  # compiled kernels kept across runs: compiling is paid once per machine and model
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(inductor_cache_dir()))
    module.accelerate(trainer.compile, trainer.channels_last, static_batch=data.batch_size)  # as resolved() set them
    datamodule = ImageFolderDataModule(data, rows, model_input, seed=trainer.seed)
    attach_recipe(module, datamodule, model, data, rows, run)
    logger = build_logger(trainer.logger, run.root, run.root.name)
    callbacks = [
        # best by --trainer.monitor; no version counter, so a resumed run overwrites best.ckpt instead of best-v1
        ModelCheckpoint(
            run.checkpoints,
            "best",
            monitor=trainer.monitor,
            mode=MONITOR_MODES[trainer.monitor],
            enable_version_counter=False,
        ),
        # every epoch's end, for --resume (save_last=True follows only improvements of the monitored metric)
        ModelCheckpoint(run.checkpoints, "last", monitor=None, save_top_k=1, enable_version_counter=False),
        SkippedImagesReport(run),
    ]
    if logger:
        callbacks.append(LearningRateMonitor(logging_interval="epoch"))
    if model.ema:  # validation, best.ckpt, test and export see the average; last.ckpt keeps both for --resume
        callbacks.append(WeightAverage(decay=model.ema))
    lightning_trainer = build_trainer(trainer, run.root, logger, callbacks)
    # weights_only: resuming never unpickles code from a checkpoint file
    lightning_trainer.fit(module, datamodule=datamodule, ckpt_path=run.last if resume else None, weights_only=True)
    partial = partial_test(trainer)
    if test_after and partial:
        print(f"No test report: {partial}; `kvasir test` on a full run gives one.")
    elif test_after:
        best = callbacks[0].best_model_path or None
        test_best(lightning_trainer, module, datamodule, best, run, rows, uncertainty, evaluation_precision(trainer))
    if lightning_trainer.is_global_zero:
        update_json(run.model_info, parameter_info(copy.deepcopy(module.backbone).cpu().float()))
        print(f"Run folder: {run.root}")
    return run.root


def attach_recipe(module, datamodule, model: ModelConfig, data: DataConfig, rows, run: RunFolder) -> None:
    """The teacher (--model.teacher) and the unlabeled frames (--data.unlabeled_dir), checked and recorded in the
    run (model_info.json; unlabeled_left_out.csv lists the frames left out and why)."""
    recorded: dict = {}
    if model.teacher:
        from kvasir_mobileone.models.loading import load_teacher

        module.teacher = load_teacher(model.teacher, model.teacher_weights, module.class_names)
        recorded["teacher"] = dataclasses.asdict(module.teacher.record)
        print(
            f"Distilling from {module.teacher.record.name} ({module.teacher.record.source}) at "
            f"{module.teacher.record.image_size} px, weight {model.distill_weight}, temperature "
            f"{model.distill_temperature}."
        )
    if data.unlabeled_dir:
        from kvasir_mobileone.data.unlabeled import unlabeled_frames

        frames = unlabeled_frames(data.unlabeled_dir, data.data_dir, rows, data.near_duplicate_bits, data.cache_dir)
        datamodule.unlabeled = frames
        recorded["unlabeled"] = frames.summary()
        if is_rank_zero():
            write_csv(run.unlabeled_left_out, ["path", "reason"], [[r["path"], r["reason"]] for r in frames.left_out])
        print(frames.describe() + (f"; the others are listed in {run.unlabeled_left_out}" if frames.left_out else ""))
    if recorded and is_rank_zero():
        update_json(run.model_info, recorded)


def resumed_run(resume: str, data_dir: str | None):
    """(run, data, model, trainer, uncertainty configs as the run recorded them, its split) of an interrupted run,
    its data folder where --data_dir says when it has moved."""
    run = RunFolder(Path(resume).resolve())
    config = run.read_config()
    data, model, trainer = (
        DataConfig(**config["data"]),
        ModelConfig(**config["model"]),
        TrainerConfig(**config["trainer"]),
    )
    uncertainty = UncertaintyConfig(**config.get("uncertainty", {}))
    compile_mode, channels_last = speed_settings(trainer)  # explicit already, unless an older release recorded auto
    trainer = dataclasses.replace(trainer, compile=compile_mode, channels_last=channels_last)
    data = dataclasses.replace(data, data_dir=str(existing_data_dir(data.data_dir, data_dir, str(run.root))))
    # last.ckpt holds every weight: downloading ImageNet weights only to overwrite them would fail offline
    model = dataclasses.replace(model, pretrained=False, weights=None)
    if not run.last.is_file():
        raise RunError(f"{run.last} not found: the run stopped before its first epoch ended. Start again.")
    rows = read_manifest(run.manifest)
    check_manifest_files(rows, data.data_dir, run.manifest)
    os.environ[RUN_DIR_ENV] = str(run.root)
    return run, data, model, trainer, uncertainty, rows


def record_counts(rows, run: RunFolder) -> dict[str, dict[str, int]]:
    """Per-split class counts: RUN/split_counts.json and the console, with the classes a split lacks."""
    counts, gaps = split_counts(rows), split_gaps(rows)
    if is_rank_zero():
        write_json(run.split_counts, counts | {"classes_missing_from_splits": gaps})
        print_split_counts(counts)
        if gaps:
            warnings.warn(describe_gaps(gaps) + f" (recorded in {run.split_counts})", stacklevel=3)
    return counts


def test_best(lightning_trainer, module, datamodule, best, run, rows, uncertainty, precision: str) -> None:
    """The test at the end of fit, of the best checkpoint at the run's evaluation precision (fp32 by default), as
    `kvasir test` runs it: the detector and thresholds fitted into the checkpoint, the report written."""
    if best is None:  # no validation: no best checkpoint
        print("No best checkpoint was saved (no validation ran): testing the weights in memory.")
    tested = run_test(lightning_trainer, module, datamodule, ckpt_path=best, weights_only=True)
    if lightning_trainer.world_size == 1:  # the detector and thresholds, fitted and kept in the checkpoint
        module.uncertainty = calibrate(
            lightning_trainer, module, datamodule.data, rows, uncertainty, tested, datamodule.skipped
        )
        store_uncertainty(run.checkpoint(), module.uncertainty)
    else:
        print("The out-of-distribution detector and thresholds are fitted on one device: `kvasir test RUN`.")
    if lightning_trainer.is_global_zero:
        metrics = report_test_predictions(
            module, tested, rows, run.test_dir, precision=precision, excluded=run.excluded_count()
        )
        print(test_summary(metrics))
