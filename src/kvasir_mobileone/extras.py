"""The optional extras: what each brings, and the one-line error that names the extra when it is missing.

The core (`pip install kvasir-mobileone`) is what fit, test, export, predict, audit's masking and the statistics
need; `make install` installs every extra."""

from __future__ import annotations

import importlib
from types import ModuleType

from kvasir_mobileone.errors import UserError

# extra -> (the modules it brings, what needs them); pyproject.toml's [project.optional-dependencies] installs them
EXTRAS = {
    "serve": (("gradio",), "the web page (kvasir serve)"),
    "label-issues": (("cleanlab",), "kvasir label-issues"),
    "explain": (
        ("pytorch_grad_cam", "captum"),
        "heatmaps (kvasir predict --explain, kvasir serve) and the audit's occlusion maps",
    ),
    "mobile": (("executorch", "torchao", "coremltools"), "ExecuTorch and Core ML (kvasir export --format)"),
    "gpu": (("kornia", "pynvml"), "--data.augment_on kornia and the GPU benchmark's utilisation"),
    "video": (("av",), "examination videos (kvasir predict VIDEO, kvasir synth --video true)"),
}


class MissingExtraError(UserError):
    """An optional extra is not installed."""


def install_line(extra: str) -> str:
    return f"pip install 'kvasir-mobileone[{extra}]' (make install installs every extra)"


def require(module: str, extra: str) -> ModuleType:
    """The module, or a MissingExtraError naming the extra it comes with and how to install it, in one line."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        package = module.split(".")[0]
        raise MissingExtraError(
            f"{package} is not installed: {EXTRAS[extra][1]} needs it; it comes with the optional extra "
            f"'{extra}': {install_line(extra)}."
        ) from err
