"""Lightning's Trainer, configured from a dataclass made from its own signature: every Trainer argument is a YAML
key and a flag (`--trainer.accumulate_grad_batches 4`) without being declared again here. Added to them: which
logger, where the run folder goes, the seed, and the precision evaluation runs at."""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import logging
import os
import textwrap
from typing import Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import TQDMProgressBar, WeightAveraging
from lightning.pytorch.trainer.states import TrainerFn

from kvasir_mobileone.runs import LOGGER_FOLDERS

# progress notes below the commands layer; `kvasir` shows them on stdout (cli.show_notes)
log = logging.getLogger(__name__)

WANDB_PROJECT = "kvasir-mobileone"

# Trainer arguments this tool sets itself: the run folder, its loggers, its checkpoints and progress bar.
OWN_ARGUMENTS = {"self", "default_root_dir", "logger", "callbacks", "enable_checkpointing"}
# Defaults that differ from Lightning's, for this task.
DEFAULTS = {"max_epochs": 30, "log_every_n_steps": 10, "deterministic": False}


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """What this tool adds to Lightning's Trainer arguments.

    Args:
        logger: wandb (offline when not logged in), tensorboard, csv or none
        runs_dir: parent folder of run folders
        run_name: default: <date>-<time>-<model name>
        seed: seed of training (weights, order, augmentation)
        eval_precision: precision of test, features and parity checks: 32-true (the default, same numbers on any
            machine) or as-training
        compile: torch.compile the network for training: off, default, reduce-overhead (CUDA graphs) or
            max-autotune; auto: the measured choice on a GPU (README, GPU speed), off on a CPU. Full training
            batches run one static-shape graph; the last batch of an epoch and evaluation run eager. Kernels are
            cached across runs in $TORCHINDUCTOR_CACHE_DIR, else ~/.cache/kvasir-mobileone/inductor
        channels_last: NHWC memory layout for the network and its input: on, off; auto: on with a GPU
        monitor: the validation metric that picks checkpoints/best.ckpt (the one tested and exported):
            val/f1_macro (the default: on imbalanced classes accuracy picks models that ignore the small ones;
            README, Imbalanced classes), val/balanced_acc, val/acc (the original workflow's) or val/loss
    """

    logger: Literal["wandb", "tensorboard", "csv", "none"] = "wandb"
    runs_dir: str = "runs"
    run_name: str | None = None
    seed: int = 42
    eval_precision: Literal["32-true", "as-training"] = "32-true"
    compile: Literal["auto", "off", "default", "reduce-overhead", "max-autotune"] = "auto"
    channels_last: Literal["auto", "on", "off"] = "auto"
    monitor: Literal["val/f1_macro", "val/balanced_acc", "val/acc", "val/loss"] = "val/f1_macro"


# whether a higher value of each --trainer.monitor metric is better
MONITOR_MODES = {"val/f1_macro": "max", "val/balanced_acc": "max", "val/acc": "max", "val/loss": "min"}


def _lightning_fields() -> list[tuple]:
    fields = []
    for name, parameter in inspect.signature(L.Trainer.__init__).parameters.items():
        if name in OWN_ARGUMENTS or parameter.kind not in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY):
            continue
        default = DEFAULTS.get(name, parameter.default)
        fields.append((name, parameter.annotation, dataclasses.field(default=default)))
    return fields


def _doc() -> str:
    """RunSettings' arguments, then Lightning's own argument docs: the help text of every --trainer.* flag."""
    lightning_args = (L.Trainer.__init__.__doc__ or "").split("Args:", 1)[-1].split("Raises:", 1)[0]
    own = RunSettings.__doc__.split("Args:", 1)[1]
    args = textwrap.indent(textwrap.dedent(own).strip() + "\n" + textwrap.dedent(lightning_args).strip(), "    ")
    return (
        "Lightning Trainer arguments (all of them; precision None: 16-mixed on CUDA, else 32-true) and the run "
        f"folder.\n\nArgs:\n{args}\n"
    )


_FIELDS = _lightning_fields()
TrainerConfig = dataclasses.make_dataclass("TrainerConfig", _FIELDS, bases=(RunSettings,), frozen=True)
TrainerConfig.__module__ = __name__
TrainerConfig.__doc__ = _doc()
LIGHTNING_ARGUMENTS = tuple(f[0] for f in _FIELDS)


# What --trainer.compile auto means on a GPU, measured by `kvasir benchmark --device cuda` (README, GPU speed): on
# an H100, compiling made S3 training 42% faster but took a minute, more than it saves in a 30-epoch Kvasir run.
GPU_COMPILE = "off"


def ema_with_warmup(decay: float):
    """AveragedModel's avg_fn for an EMA whose decay grows with the updates, min(decay, (1 + n) / (10 + n)) after n
    of them (TensorFlow's ExponentialMovingAverage with num_updates; timm's ModelEmaV3 warms up likewise): a plain
    0.999 average of a short run would still hold most of the random initialisation, and its BatchNorm statistics."""

    def average(averaged: torch.Tensor, current: torch.Tensor, updates: torch.Tensor) -> torch.Tensor:
        n = float(updates)
        rate = 1.0 - min(decay, (1.0 + n) / (10.0 + n))
        return averaged + (current - averaged) * rate

    return average


class WeightAverage(WeightAveraging):
    """Lightning's weight averaging as an EMA with warm-up (--model.ema; ema_with_warmup): validation, and so the
    best checkpoint's choice, sees the average; every checkpoint's state_dict holds it (and current_model_state the
    trained weights, for --resume).

    Lightning restores current_model_state into the module whenever this callback loads a checkpoint; that is right
    for --resume, and wrong for the test at the end of fit, which would then test the trained weights instead of the
    average in best.ckpt: only a fit restores it."""

    def __init__(self, decay: float):
        super().__init__(avg_fn=ema_with_warmup(decay))
        self.decay = decay

    def on_load_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_load_checkpoint(trainer, pl_module, checkpoint)


def on_gpu(accelerator: str = "auto") -> bool:
    return accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()


def auto_precision(accelerator: str = "auto") -> str:
    """16-bit mixed on CUDA: on an H100 it trained MobileOne-S3 21% faster than bf16-mixed (README, GPU speed).
    fp32 on CPUs, where bf16 autocast was slower on one CPU kind and faster on another (README, Speed) and
    changes the numbers."""
    if on_gpu(accelerator):
        return "16-mixed"
    return "32-true"


def training_devices(config: TrainerConfig) -> int:
    """How many GPUs a TrainerConfig trains on (0 without CUDA), before a Trainer exists."""
    if not on_gpu(config.accelerator):
        return 0
    if isinstance(config.devices, int):
        return torch.cuda.device_count() if config.devices == -1 else config.devices
    if isinstance(config.devices, (list, tuple)):
        return len(config.devices)
    text = str(config.devices)
    if text.lstrip("-").isdigit():
        return torch.cuda.device_count() if int(text) == -1 else int(text)
    return len([d for d in text.split(",") if d.strip()]) if "," in text else torch.cuda.device_count()


def speed_settings(config: TrainerConfig) -> tuple[str, str]:
    """--trainer.compile and --trainer.channels_last with auto made explicit for this machine."""
    gpu = on_gpu(config.accelerator)
    compile_mode = (GPU_COMPILE if gpu else "off") if config.compile == "auto" else config.compile
    channels_last = ("on" if gpu else "off") if config.channels_last == "auto" else config.channels_last
    return compile_mode, channels_last


def wandb_logged_in() -> bool:
    """True when W&B has credentials (env, settings or netrc), without prompting."""
    import wandb

    try:
        return bool(wandb.login(prompt=False, verify=False))
    except TypeError:  # wandb releases before the `prompt` argument
        return bool(os.environ.get("WANDB_API_KEY"))


def build_logger(kind: str, run_dir, run_name: str):
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
            log.info(
                f"W&B: not logged in, logging offline to {run_dir}/{LOGGER_FOLDERS['wandb']}. "
                f"Upload later with: wandb sync {run_dir}/{LOGGER_FOLDERS['wandb']}/offline-run-*"
            )
        return logger
    if kind == "tensorboard":
        return loggers.TensorBoardLogger(save_dir=str(run_dir), name=LOGGER_FOLDERS["tensorboard"], version="")
    if kind == "csv":
        return loggers.CSVLogger(save_dir=str(run_dir), name=LOGGER_FOLDERS["csv"], version="")
    return False


def build_trainer(config: TrainerConfig, run_dir, logger=False, callbacks=(), **overrides) -> L.Trainer:
    """A Trainer from every Lightning argument of `config` (a TrainerConfig), with `overrides` on top."""
    arguments = {name: getattr(config, name) for name in LIGHTNING_ARGUMENTS} | overrides
    arguments["precision"] = arguments["precision"] or auto_precision(arguments["accelerator"])
    bar = [TQDMProgressBar()] if arguments.get("enable_progress_bar") is not False else []
    return L.Trainer(default_root_dir=str(run_dir), logger=logger, callbacks=[*bar, *callbacks], **arguments)


def evaluation_precision(config: TrainerConfig) -> str:
    """The Trainer precision evaluation runs at (the module also turns autocast off for 32-true)."""
    return "32-true" if config.eval_precision == "32-true" else (config.precision or auto_precision(config.accelerator))


def evaluation_settings(
    recorded: TrainerConfig, accelerator: str = "auto", precision: str | None = None
) -> tuple[TrainerConfig, str, str]:
    """How `kvasir test` runs a recorded run: (one device — every test image seen once, one process writes the
    report — at the run's evaluation precision, or at `precision` when one is given; the model's eval_precision for
    it, "32-true" or "as-training"; its memory layout: on a GPU that of fit's own test, NHWC unless the run said
    otherwise, never on a CPU, where oneDNN aborts in channels_last)."""
    channels_last = speed_settings(recorded)[1] if on_gpu(accelerator) else "off"
    if precision:  # asked for explicitly: the module then leaves the trainer's autocast on
        module_precision = "32-true" if precision == "32-true" else "as-training"
    else:
        recorded = dataclasses.replace(recorded, accelerator=accelerator)
        module_precision, precision = recorded.eval_precision, evaluation_precision(recorded)
    config = TrainerConfig(accelerator=accelerator, devices=1, logger="none", precision=precision)
    return config, module_precision, channels_last


AUTOCAST_DTYPES = {
    "bf16-mixed": torch.bfloat16,
    "16-mixed": torch.float16,
    "bf16-true": torch.bfloat16,
    "16-true": torch.float16,
}
# Lightning's short spellings of its precisions (the Trainer accepts them; a run records what was given)
PRECISION_ALIASES = {"bf16": "bf16-mixed", "16": "16-mixed", "32": "32-true", "64": "64-true"}


def precision_context(precision: str | int, device_type: str = "cpu"):
    """Autocast for a Trainer precision outside a Trainer (features, export's check, predict on a run): none for
    32-true, the 16-bit dtype otherwise, as Lightning's precision plugins set it up."""
    name = PRECISION_ALIASES.get(str(precision), str(precision))
    dtype = AUTOCAST_DTYPES.get(name)
    return torch.autocast(device_type, dtype=dtype) if dtype else contextlib.nullcontext()
