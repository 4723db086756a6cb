"""INT8 bundles: calibrated on training images only, checked on the test split, refused when they lose accuracy,
and used by predict (without torch) unless fp32 is asked for."""

import json
import os
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest

from kvasir_mobileone.cli import main
from kvasir_mobileone.deploy.quantize import Int8Refused, decide, int8_verdict
from kvasir_mobileone.evaluation.stats import apply_temperature, matched_pairs_interval, softmax
from kvasir_mobileone.images import ModelInput
from kvasir_mobileone.io import read_csv


def test_int8_bundle_keeps_the_model_and_says_how_it_was_checked(int8_bundle, trained_run):
    meta = json.loads((int8_bundle / "metadata.json").read_text())
    int8 = meta["int8"]
    assert meta["precision"] == "int8" and (int8_bundle / int8["file"]).is_file()
    assert int8["images"] == 16 and int8["verdict"] in ("certified", "not certified") and int8["reason"]
    assert f"**int8 model ({int8['verdict']})**: " in (int8_bundle / "README.md").read_text()
    assert int8["accepted"] and int8["config"] == "minmax-per-channel" and len(int8["fp32_layers"]) == 1
    # the layer kept in fp32 reads its weights directly, not through a DequantizeLinear
    import onnx

    graph = onnx.load(str(int8_bundle / int8["file"])).graph
    kept = next(n for n in graph.node if n.name == int8["fp32_layers"][0])
    dequantized = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    assert kept.input[1] not in dequantized
    assert any(n.op_type == "Conv" and n.input[1] in dequantized for n in graph.node)  # the others are int8
    low, high = int8["accuracy_change_ci"]
    assert low <= int8["accuracy_change"] <= high and 0 <= int8["mcnemar_p"] <= 1
    # calibration images come from the training split, never from the test split
    split_of = {r["path"]: r["split"] for r in read_csv(trained_run / "split_manifest.csv")}
    assert len(int8["calibration_paths"]) == 64 and {split_of[p] for p in int8["calibration_paths"]} == {"train"}


def test_predict_runs_the_int8_model_without_torch_unless_fp32_is_asked(int8_bundle, tiny_data):
    code = (
        "import sys; from kvasir_mobileone.deploy.runtime import load; "
        f"p = load({str(int8_bundle)!r}); q = load({str(int8_bundle)!r}, 'fp32'); "
        "print(p.precision, q.precision, [m for m in ('torch', 'timm', 'lightning') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, env=os.environ)
    assert out.stdout.split("\n")[0] == "int8 fp32 []"
    results = main(["predict", str(tiny_data / "esophagitis"), "--model", str(int8_bundle)])
    fp32 = main(["predict", str(tiny_data / "esophagitis"), "--model", str(int8_bundle), "--precision", "fp32"])
    # each answer is the one its own ONNX file gives (the int8 model unless fp32 is asked for), image by image
    meta = json.loads((int8_bundle / "metadata.json").read_text())
    inputs = np.stack([ModelInput.from_dict(meta["input"]).read(r["path"])[0] for r in results]).astype(np.float32)
    for answers, file in ((results, meta["int8"]["file"]), (fp32, "model.onnx")):
        logits = ort.InferenceSession(str(int8_bundle / file)).run(None, {"image": inputs})[0]
        probs = (
            apply_temperature(softmax(logits), meta.get("temperature")) if meta.get("temperature") else softmax(logits)
        )
        assert [a["top1"] for a in answers] == [meta["class_names"][i] for i in probs.argmax(axis=1)]
        assert np.allclose([a["p1"] for a in answers], probs.max(axis=1), atol=1e-5)
    assert len(results) == 40 and [a["p1"] for a in results] != [a["p1"] for a in fp32]


def figures(change, ci, fp32_only, int8_only, p):
    """int8 check figures as `check` and `build_int8` give them, made up: the rule is tested without quantizing."""
    return {
        "accuracy_change": change,
        "accuracy_change_ci": ci,
        "fp32_only_right": fp32_only,
        "int8_only_right": int8_only,
        "mcnemar_p": p,
        "images": 800,
        "top1_agreement": 0.97,
        "accuracy_fp32": 0.9,
        "accuracy_int8": 0.9 + change,
        "config": "minmax-per-channel",
        "fp32_layers": [],
        "fp32_ms_batch1": 2.0,
        "int8_ms_batch1": 1.0,
    }


@pytest.mark.parametrize(
    ("made_up", "verdict"),
    [
        # the demo's case: 47 images, one changed answer, accuracy up: nothing shows a loss, nothing rules one out
        (figures(0.021, matched_pairs_interval(1, 0, 47), 0, 1, 1.0), "not certified"),
        (figures(-0.0025, matched_pairs_interval(3, 5, 800), 5, 3, 0.73), "certified"),  # a 1-point loss ruled out
        (figures(-0.04, matched_pairs_interval(8, 40, 800), 40, 8, 1e-6), "refused"),  # all below -1 point
        (figures(-0.03, (-0.05, -0.015), 10, 3, 0.09), "refused"),  # the interval alone (McNemar p = 0.09)
        (figures(-0.006, (-0.012, 0.0005), 12, 2, 0.013), "refused"),  # McNemar: more images right only in fp32
        (figures(-0.006, (-0.012, 0.0005), 2, 12, 0.013), "not certified"),  # significant, but int8's way
    ],
)
def test_the_int8_verdict_rests_on_the_interval_and_mcnemar(made_up, verdict):
    assert int8_verdict(made_up, max_accuracy_drop=0.01)["verdict"] == verdict
    if verdict == "refused":
        with pytest.raises(Int8Refused, match="Refused to write the int8 model: .* refused: "):
            decide(made_up, 0.01, force=False)
        try:
            forced = decide(made_up, 0.01, force=True)
        except Int8Refused as err:
            pytest.fail(f"--force did not write the refused int8 model: {err}")
        assert forced["accepted"] and forced["forced"] and "written with --force" in forced["summary"]
    else:
        decided = decide(made_up, 0.01, force=False)
        assert decided["accepted"] and not decided["forced"] and decided["verdict"] == verdict


def test_a_refused_int8_model_is_not_written_and_the_fp32_bundle_stands(trained_run, tmp_path, monkeypatch):
    """The refusal path of a real export: the verdict is forced to "refused", nothing int8 is left behind."""
    from kvasir_mobileone.deploy import quantize

    monkeypatch.setattr(quantize, "int8_verdict", lambda f, m: {"verdict": "refused", "reason": "made up"})
    with pytest.raises(Int8Refused, match="Refused to write the int8 model"):
        main(["export", str(trained_run), "--out", str(tmp_path), "--quantize", "int8", "--calibration_images", "16"])
    assert not (tmp_path / "model.int8.onnx").exists() and not list(tmp_path.glob(".*.onnx"))
    assert json.loads((tmp_path / "metadata.json").read_text())["precision"] == "fp32"  # the fp32 bundle stands
