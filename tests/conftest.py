"""Shared fixtures: a tiny synthetic image folder, made once per session; CPU only, offline."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import budget

# No test may reach the network or a user's caches: an empty Hugging Face cache, the hub offline whatever the
# environment says, and W&B with no credentials anywhere, so the tool itself must choose offline mode (no WANDB_MODE
# set here). Their folders are made under pytest's own temporary folder in pytest_configure, before collection
# imports timm or wandb.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.pop("WANDB_API_KEY", None)
os.environ.pop("WANDB_MODE", None)
os.environ.setdefault("WANDB_SILENT", "true")
# CPU only, unless KVASIR_TEST_GPU=1 (benchmarks/gpu_check.sh runs `pytest -m gpu` that way on a GPU machine)
os.environ["CUDA_VISIBLE_DEVICES"] = (
    os.environ.get("CUDA_VISIBLE_DEVICES", "0") if os.environ.get("KVASIR_TEST_GPU") == "1" else ""
)
# Results must not depend on the machine or on how the suite is run: one thread (float sums are ordered by the
# thread count) in every process. `make test` runs the suite in pytest-xdist workers, one per CPU: two threads in each
# of two workers on two cores would wait on each other, and a plain `pytest` must build the same shared fixtures.
os.environ["OMP_NUM_THREADS"] = "1"

import torch

torch.set_num_threads(1)

from fitflags import fit_flags, fit_run  # noqa: E402
from kvasir_mobileone.data.synth import KVASIR_CLASSES, synth  # noqa: E402
from shared_cache import SharedCache  # noqa: E402

TINY_CLASSES = KVASIR_CLASSES[:4]
GPU_TESTS = os.environ.get("KVASIR_TEST_GPU") == "1"


# tools/breakit.py builds the shared fixtures once from the unbroken code and names them here (a JSON file of
# fixture -> path) for the mutations whose module that build never loaded: the same code would build the same thing.
SNAPSHOT = (
    json.loads(Path(os.environ["KVASIR_TEST_SNAPSHOT"]).read_text()) if os.environ.get("KVASIR_TEST_SNAPSHOT") else {}
)
CACHE = SharedCache()  # its folder is set in pytest_configure


def shared(name: str, build):
    """The session fixture `name`: from the break-it snapshot when there is one, else from the cache of shared
    fixtures (built by `build(folder)` into its folder when this code has not built it yet)."""
    return Path(SNAPSHOT[name]) if name in SNAPSHOT else CACHE.get(name, build)


@pytest.hookimpl(trylast=True)  # after pytest's tmp_path plugin has made its factory
def pytest_configure(config):
    base = config._tmp_path_factory.getbasetemp()  # the basetemp that tmp_path_factory shares with every test
    os.environ["HF_HOME"] = str(base / "hf-home")
    os.environ["WANDB_CONFIG_DIR"] = str(base / "wandb-config")
    os.environ["NETRC"] = str(base / "wandb-config" / "netrc")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(base / "inductor")  # torch.compile's kernels (--trainer.compile)
    for folder in ("hf-home", "wandb-config"):
        (base / folder).mkdir(exist_ok=True)
    CACHE.configure(Path(config.rootpath), base / "shared")
    budget.register(config)  # every default-suite test and fixture within its time budget (tests/budget.py)


@pytest.fixture(scope="session")
def tiny_data():
    """4 classes x 40 JPEGs at a tenth of Kvasir's resolutions (72x57 to 192x107)."""
    return shared(
        "tiny_data",
        lambda home: synth(str(home / "data"), images_per_class=40, seed=1, scale=0.1, classes=TINY_CLASSES),
    )


@pytest.fixture(scope="session")
def trained_run(tiny_data):
    """A run folder from `kvasir fit` on tiny_data: MobileOne-S0 from scratch, 48 px, W&B offline, fitted with
    --test_after false, then tested by `kvasir test` (which fits the detector into its checkpoint)."""

    def build(home):
        from kvasir_mobileone.cli import main

        # MobileOne from scratch starts slowly: 48 steps of Adam at lr 1e-2 on batches of 32 reach above chance on 4
        # classes (11 of 16 test images here, with oneDNN and ATen held to AVX2 too); a step on 32 images costs
        # little more than one on 8 (the 480 steps on 8 this fixture took before cost 3 times as long).
        main(
            ["fit", "--data.data_dir", str(tiny_data)]
            + fit_flags("mobileone_s0", 32, lr=0.01, epochs=12, logger="wandb", image_size=48)
            + ["--trainer.runs_dir", str(home), "--trainer.run_name", "r", "--test_after", "false"]
        )
        # then tested by `kvasir test` (the report, and the detector fitted into the checkpoint), here and not by the
        # first fixture that needs it: every bundle exports the same run, whichever is built first
        main(["test", str(home / "r"), "--num_workers", "0"])
        return home / "r"

    return shared("trained_run", build)


@pytest.fixture(scope="session")
def resnet_run(tiny_data):
    """A run folder from `kvasir fit` on tiny_data with resnet10t (it learns the synthetic shapes in seconds, on any
    CPU): for tests that need a model that has learned, not MobileOne itself. Tested at the end of fit."""
    return shared("resnet_run", lambda home: fit_run(tiny_data, home, "resnet", flags=fit_flags(epochs=8)))


def exported(name: str, run: Path, *flags: str) -> Path:
    """The shared fixture `name`: `kvasir export RUN --out FOLDER/bundle FLAGS`."""

    def build(home):
        from kvasir_mobileone.cli import main

        main(["export", str(run), "--out", str(home / "bundle"), *flags])
        return home / "bundle"

    return shared(name, build)


@pytest.fixture(scope="session")
def bundle(trained_run):
    """trained_run exported (the card's evaluation section comes from its report): the fp32 bundle (ONNX,
    safetensors, metadata, model card). Tests that change a bundle change a copy."""
    return exported("bundle", trained_run)


# the int8 export's flags: one layer kept in fp32 (to exercise the sensitivity search), 64 training images calibrate
INT8_EXPORT = ("--quantize", "int8", "--calibration_images", "64", "--fp32_layers", "1")


@pytest.fixture(scope="session")
def int8_bundle(trained_run):
    """trained_run exported with an ONNX int8 model beside the fp32 one. Its 16 test images are too few to certify
    anything: int8 is written unless they show a loss."""
    return exported("int8_bundle", trained_run, *INT8_EXPORT)


@pytest.fixture(scope="session")
def int8_mobile_bundle(trained_run):
    """trained_run exported with every format: ONNX int8, ExecuTorch fp32 and int8, Core ML; the same 64 training
    images calibrate both int8 models. ExecuTorch's lowering takes most of a minute: the tests that need it are
    slow-marked. Written with --force: the tests that read it check the programs and their figures, not that a
    48-step model survives int8 (ExecuTorch keeps no layer in fp32; seen refused, 12 of 16 test images right in fp32
    and 4 in int8, on a fit one thread ordered differently); the refusal has its own tests."""
    return exported("int8_mobile_bundle", trained_run, "--format", "executorch,coreml", *INT8_EXPORT, "--force", "true")


@pytest.fixture(scope="session")
def ood_data():
    """The "I don't know" tests' data: 4 synthetic classes x 80 JPEGs to train on (val and test 20% each: enough
    val images to set a 5% false-alarm threshold), and the other 4 synthetic classes held out (30 each)."""

    def build(home):
        synth(str(home / "train"), images_per_class=80, seed=2, scale=0.1, classes=TINY_CLASSES)
        synth(str(home / "held_out"), images_per_class=30, seed=3, scale=0.1, classes=KVASIR_CLASSES[4:])
        return home

    return shared("ood_data", build)


@pytest.fixture(scope="session")
def ood_runs(ood_data):
    """resnet10t fitted on ood_data/train (tested at the end of fit, so its checkpoint holds the detector), then
    exported: the folder holding ood/ (the run) and bundle/."""

    def build(home):
        from kvasir_mobileone.cli import main

        flags = fit_flags(epochs=8) + ["--data.val_fraction", "0.2", "--data.test_fraction", "0.2"]
        flags += ["--uncertainty.near_dir", str(ood_data / "held_out")]  # the report measures near OOD too
        run = fit_run(ood_data / "train", home, "ood", flags=flags)
        main(["export", str(run), "--out", str(home / "bundle")])
        return home

    return shared("ood_runs", build)


@pytest.fixture(scope="session")
def ood_run(ood_runs):
    """(run folder, bundle) of ood_runs."""
    return ood_runs / "ood", ood_runs / "bundle"


SHARED_FIXTURES = (
    "tiny_data",
    "trained_run",
    "resnet_run",
    "bundle",
    "int8_bundle",
    "int8_mobile_bundle",
    "ood_data",
    "ood_runs",
)


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
