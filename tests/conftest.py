"""Shared fixtures: a tiny synthetic image folder, made once per session; CPU only, offline."""

from __future__ import annotations

import os
import tempfile

import pytest

# No test may reach the network or a user's caches: a fresh, empty Hugging Face cache and offline W&B.
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="kvasir-test-hf-")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# W&B with no credentials anywhere, so the tool itself must choose offline mode (no WANDB_MODE set here).
os.environ.pop("WANDB_API_KEY", None)
os.environ.pop("WANDB_MODE", None)
os.environ["WANDB_CONFIG_DIR"] = tempfile.mkdtemp(prefix="kvasir-test-wandb-")
os.environ["NETRC"] = os.path.join(os.environ["WANDB_CONFIG_DIR"], "netrc")
os.environ.setdefault("WANDB_SILENT", "true")
# CPU only, unless KVASIR_TEST_GPU=1 (benchmarks/gpu_check.sh runs `pytest -m gpu` that way on a GPU machine)
os.environ["CUDA_VISIBLE_DEVICES"] = (
    os.environ.get("CUDA_VISIBLE_DEVICES", "0") if os.environ.get("KVASIR_TEST_GPU") == "1" else ""
)
# Results must not depend on the machine: a fixed thread count (float sums are ordered by it) in every process.
os.environ["OMP_NUM_THREADS"] = "2"

import torch

torch.set_num_threads(2)

from fitflags import fit_flags  # noqa: E402
from kvasir_mobileone.data.synth import KVASIR_CLASSES, synth  # noqa: E402

TINY_CLASSES = KVASIR_CLASSES[:4]
GPU_TESTS = os.environ.get("KVASIR_TEST_GPU") == "1"


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """4 classes x 40 JPEGs at a tenth of Kvasir's resolutions (72x57 to 192x107)."""
    return synth(
        str(tmp_path_factory.mktemp("tiny") / "data"),
        images_per_class=40,
        seed=1,
        scale=0.1,
        classes=TINY_CLASSES,
    )


@pytest.fixture(scope="session")
def trained_run(tiny_data, tmp_path_factory):
    """A run folder from `kvasir fit` on tiny_data: MobileOne-S0 from scratch, 48 px, W&B offline, no test."""
    from kvasir_mobileone.cli import main

    runs = tmp_path_factory.mktemp("runs")
    # MobileOne from scratch starts slowly: ~500 steps of Adam at lr 3e-3 reach well above chance on 4 classes.
    main(
        [
            "fit",
            "--data.data_dir",
            str(tiny_data),
            *fit_flags("mobileone_s0", 8, epochs=30, logger="wandb", image_size=48),
            "--trainer.runs_dir",
            str(runs),
            "--trainer.run_name",
            "r",
            "--test_after",
            "false",
        ]
    )
    return runs / "r"


def pytest_collection_modifyitems(config, items):
    """Tests marked gpu run only where CUDA is asked for and present; elsewhere each is skipped with the reason and
    the command that runs it, shown in the summary (-ra), never silently."""
    if GPU_TESTS and torch.cuda.is_available():
        return
    why = "needs CUDA: on a GPU machine run KVASIR_TEST_GPU=1 pytest -m gpu (benchmarks/gpu_check.sh does)"
    if GPU_TESTS:
        why = "KVASIR_TEST_GPU=1 but torch sees no CUDA device"
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=why))
