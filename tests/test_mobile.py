"""On-device formats: a trained run exported to ExecuTorch (.pte, fp32 and int8, run in ExecuTorch's runtime) and
Core ML (.mlpackage with the preprocessing inside, converted here, run only on macOS)."""

import json
import sys

import numpy as np
import pytest
import torch

from kvasir_mobileone.cli import main
from kvasir_mobileone.deploy.runtime import load
from kvasir_mobileone.errors import UserError
from kvasir_mobileone.evaluation.stats import apply_temperature, softmax
from kvasir_mobileone.images import ModelInput, hide, network_input
from kvasir_mobileone.io import read_csv


@pytest.fixture
def mobile_bundle(int8_mobile_bundle):
    return int8_mobile_bundle


@pytest.mark.slow  # ExecuTorch's lowering (int8_mobile_bundle) takes most of a minute
def test_executorch_programs_agree_with_the_fp32_model_on_the_test_images(mobile_bundle, trained_run):
    from kvasir_mobileone.deploy.pte import PteModel

    meta = json.loads((mobile_bundle / "metadata.json").read_text())
    assert meta["parity"]["fused_torch_vs_executorch"]["top1_agreement"] == 1.0
    assert meta["parity"]["fused_torch_vs_executorch"]["max_rel"] < 1e-3
    # every test image of the run, more than the program's batch bound: chunks must not overwrite each other
    rows = [r for r in read_csv(trained_run / "split_manifest.csv") if r["split"] == "test"]
    from kvasir_mobileone.models.loading import open_run

    data_dir = open_run(str(trained_run)).data_dir()
    x = np.stack([ModelInput.from_dict(meta["input"]).read(data_dir / r["path"])[0] for r in rows])
    program = PteModel(mobile_bundle / "model.pte")
    assert len(x) > program.max_batch >= 1
    import onnxruntime as ort

    reference = ort.InferenceSession(str(mobile_bundle / "model.onnx")).run(None, {"image": x})[0]
    logits = program.logits(x)
    assert np.abs(logits - reference).max() / np.abs(reference).max() < 1e-3
    assert (logits.argmax(1) == reference.argmax(1)).all()
    # int8: judged on the same test images, by the ONNX int8 rule, calibrated on the same training images
    int8 = meta["executorch"]["int8"]
    assert (mobile_bundle / "model.int8.pte").is_file() and int8["images"] == len(rows)
    assert int8["accepted"] and int8["forced"] == (int8["verdict"] == "refused")  # the fixture exports with --force
    low, high = int8["accuracy_change_ci"]
    assert low <= int8["accuracy_change"] <= high and 0 <= int8["mcnemar_p"] <= 1
    assert int8["calibration_paths"] == meta["int8"]["calibration_paths"]
    split_of = {r["path"]: r["split"] for r in read_csv(trained_run / "split_manifest.csv")}
    assert {split_of[p] for p in int8["calibration_paths"]} == {"train"}
    quantized = PteModel(mobile_bundle / "model.int8.pte").logits(x)
    assert int8["top1_agreement"] == pytest.approx(np.mean(quantized.argmax(1) == logits.argmax(1)))
    assert int8["max_logit_diff"] == pytest.approx(np.abs(quantized - logits).max(), rel=1e-5)
    assert int8["fp32_ms_batch1"] > 0 and int8["int8_ms_batch1"] > 0 and meta["executorch"]["ms_batch1"] > 0


@pytest.mark.slow  # ExecuTorch's lowering (int8_mobile_bundle) takes most of a minute
def test_predict_runs_the_executorch_program(mobile_bundle, tiny_data):
    from kvasir_mobileone.deploy.pte import PteModel

    folder = tiny_data / "esophagitis"
    results = main(["predict", str(folder), "--model", str(mobile_bundle), "--runtime", "executorch"])
    meta = json.loads((mobile_bundle / "metadata.json").read_text())
    paths = sorted(folder.glob("*.jpg"))
    x = np.stack([ModelInput.from_dict(meta["input"]).read(p)[0] for p in paths])
    probs = softmax(PteModel(mobile_bundle / "model.int8.pte").logits(x))  # auto: the int8 program
    if meta.get("temperature"):
        probs = apply_temperature(probs, meta["temperature"])
    assert [r["path"] for r in results] == [str(p) for p in paths]
    assert np.allclose([r["p1"] for r in results], probs.max(1), atol=1e-5)
    # the logits say which program ran (a saturated softmax would not): the int8 one, unless fp32 is asked for
    int8, fp32 = (PteModel(mobile_bundle / name).logits(x) for name in ("model.int8.pte", "model.pte"))
    assert not np.array_equal(int8, fp32)
    for precision, expected in (("auto", int8), ("fp32", fp32)):
        predictor = load(str(mobile_bundle), precision, "executorch")
        assert np.array_equal(predictor.logits(x), expected), precision
    with pytest.raises(UserError, match="runs an exported bundle"):
        main(["predict", str(folder), "--model", str(tiny_data), "--runtime", "executorch"])


@pytest.mark.slow  # ExecuTorch's lowering (int8_mobile_bundle) takes most of a minute
def test_the_bundle_describes_each_file_and_the_core_ml_package(mobile_bundle, trained_run):
    meta = json.loads((mobile_bundle / "metadata.json").read_text())
    files = {f["file"]: f for f in meta["files"]}
    assert set(files) == {
        "model.onnx",
        "model.safetensors",
        "model.int8.onnx",
        "model.pte",
        "model.int8.pte",
        "model.mlpackage",
    }
    assert all((mobile_bundle / name).exists() for name in files)
    assert files["model.mlpackage"]["checked"].startswith("not checked here")
    card = (mobile_bundle / "README.md").read_text()
    assert "## Files" in card and "`model.int8.pte` | int8 |" in card and ".scaleFill" in card
    assert "kvasir predict IMAGES --model BUNDLE --runtime coreml" in card
    # Core ML: an ML program that takes an image at the input size and answers the run's classes
    import coremltools as ct

    spec = ct.models.MLModel(str(mobile_bundle / "model.mlpackage"), skip_model_load=True).get_spec()
    assert spec.WhichOneof("Type") == "mlProgram"
    image = spec.description.input[0].type.imageType
    assert (image.width, image.height) == (48, 48)
    assert list(spec.description.metadata.userDefined) and spec.description.predictedFeatureName == "classLabel"
    assert meta["coreml"]["preprocessing_parity"]["top1_agreement"] == 1.0
    assert meta["coreml"]["preprocessing_parity"]["max_abs"] < 1e-4
    with pytest.raises(UserError, match="Core ML models run only on macOS"):
        main(["predict", str(trained_run), "--model", str(mobile_bundle), "--runtime", "coreml"])


def test_the_core_ml_graph_preprocesses_as_predict_mask_and_temperature_included():
    """The wrapper that goes into the .mlpackage, on raw pixels, against the pipeline `predict` runs."""
    from kvasir_mobileone.deploy.coreml import WithPreprocessing

    torch.manual_seed(0)
    network = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(3)).eval()
    model_input = ModelInput(16, (0.4, 0.5, 0.6), (0.2, 0.25, 0.3), mask=((0, 0, 0.5, 0.25),))
    pixels = np.random.default_rng(0).integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
    pixels[:, :4, :8] = 255  # bright where the model never looks: the graph must black it out
    expected_x = np.stack(
        [network_input(hide(p, model_input.hidden()), model_input.mean, model_input.std) for p in pixels]
    )
    with torch.no_grad():
        expected = torch.softmax(network(torch.from_numpy(expected_x)) / 1.7, dim=1).numpy()
        got = WithPreprocessing(network, model_input, 1.7)(torch.from_numpy(pixels).permute(0, 3, 1, 2).float())
    assert np.abs(got.numpy() - expected).max() < 1e-5


def test_a_missing_mobile_extra_is_named(monkeypatch):
    from kvasir_mobileone.deploy.coreml import require_coremltools
    from kvasir_mobileone.deploy.pte import require_executorch

    monkeypatch.setitem(sys.modules, "executorch", None)
    monkeypatch.setitem(sys.modules, "coremltools", None)
    with pytest.raises(UserError, match=r"optional extra 'mobile': pip install 'kvasir-mobileone\[mobile\]'"):
        require_executorch()
    with pytest.raises(UserError, match=r"coremltools is not installed: .*'mobile'"):
        require_coremltools()


@pytest.mark.slow
def test_a_refused_executorch_int8_program_is_not_written(trained_run, tmp_path, monkeypatch):
    """The same refusal path as the ONNX int8 model: both are refused, neither is left behind, fp32 stands."""
    from kvasir_mobileone.deploy import quantize
    from kvasir_mobileone.deploy.quantize import Int8Refused

    monkeypatch.setattr(quantize, "int8_verdict", lambda f, m: {"verdict": "refused", "reason": "made up"})
    with pytest.raises(Int8Refused, match="Refused to write the int8 model"):
        main(
            ["export", str(trained_run), "--out", str(tmp_path), "--format", "executorch"]
            + ["--quantize", "int8", "--calibration_images", "16"]
        )
    assert (tmp_path / "model.pte").is_file() and not (tmp_path / "model.int8.pte").exists()
    assert not list(tmp_path.glob(".*"))
    meta = json.loads((tmp_path / "metadata.json").read_text())
    assert "int8" not in meta["executorch"] and meta["precision"] == "fp32"
    with pytest.raises(UserError, match="--format 'tflite'"):
        main(["export", str(trained_run), "--out", str(tmp_path / "x"), "--format", "tflite"])
