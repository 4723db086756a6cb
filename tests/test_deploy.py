"""Export (fuse + parity), predict from bundle and checkpoint, Grad-CAM, and the README's plain-tool snippets."""

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kvasir_mobileone.cli import main
from kvasir_mobileone.data.field_of_view import write_view_png
from kvasir_mobileone.deploy.export import parity
from kvasir_mobileone.deploy.runtime import load
from kvasir_mobileone.evaluation.stats import apply_temperature, softmax
from kvasir_mobileone.images import ModelInput, encode_view
from kvasir_mobileone.io import read_csv

README = Path(__file__).parents[1] / "README.md"
ONNXRUNTIME_EXAMPLE = Path(__file__).parents[1] / "src" / "kvasir_mobileone" / "deploy" / "onnxruntime_example.py"


@pytest.fixture(scope="module")
def image_folder(tiny_data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    for i, src in enumerate(sorted(tiny_data.glob("*/synth_0000[0-1].jpg"))):
        shutil.copy(src, folder / f"ok {i} é.jpg")
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    (folder / "empty.png").write_bytes(b"")
    return folder


def test_parity_function_on_known_arrays():
    reference = np.array([[1.0, 4.0], [2.0, -3.0]])
    result = parity(reference, reference + np.array([[0.0, 0.04], [0.0, 0.0]]))
    assert result == pytest.approx({"max_abs": 0.04, "max_rel": 0.01, "top1_agreement": 1.0})
    assert parity(reference, -reference)["top1_agreement"] == 0.0


def test_export_writes_a_parity_checked_bundle(bundle, trained_run):
    meta = json.loads((bundle / "metadata.json").read_text())
    assert meta["model_name"] == "mobileone_s0" and len(meta["class_names"]) == 4
    assert meta["input"]["image_size"] == 48 and len(meta["input"]["mean"]) == 3
    assert meta["parity"]["images"] == 16  # the run's test split
    # checked here apart from the export's own check: the shipped ONNX model against the trained (unfused) run
    rows = [r for r in read_csv(trained_run / "split_manifest.csv") if r["split"] == "test"]
    run = load(str(trained_run))
    x = np.stack([ModelInput.from_dict(meta["input"]).read(run.data_dir() / r["path"])[0] for r in rows])
    unfused, shipped = run.logits(x), load(str(bundle), "fp32").logits(x)
    independent = parity(unfused, shipped)
    assert independent["max_rel"] < 1e-3 and independent["top1_agreement"] == 1.0, independent
    for check in ("unfused_vs_fused_torch", "fused_torch_vs_onnxruntime"):  # and what the export recorded
        assert meta["parity"][check]["max_rel"] < 1e-3 and meta["parity"][check]["top1_agreement"] == 1.0
    assert meta["sizes"]["parameters_fused"] < 0.5 * meta["sizes"]["parameters_unfused"]
    assert meta["versions"]["timm"] and meta["source_checkpoint"].endswith("best.ckpt")


def test_onnx_batch_axis_is_dynamic_and_opset_is_the_one_asked_for(bundle):
    import onnx
    import onnxruntime as ort

    assert {o.domain: o.version for o in onnx.load(str(bundle / "model.onnx")).opset_import}[""] == 17

    session = ort.InferenceSession(str(bundle / "model.onnx"))
    for n in (1, 5):
        assert session.run(None, {"image": np.zeros((n, 3, 48, 48), np.float32)})[0].shape == (n, 4)


def test_predict_from_bundle_lists_unreadable_files(bundle, image_folder, tmp_path):
    out = tmp_path / "p.csv"
    main(["predict", str(image_folder), "--model", str(bundle), "--out", str(out), "--top_k", "2"])
    rows = {Path(r.split(",")[0]).name: r for r in out.read_text().splitlines()[1:]}
    assert len(rows) == 10
    assert "UnidentifiedImageError" in rows["corrupt.jpg"] and rows["empty.png"].endswith("'")
    good = [r for name, r in rows.items() if name.startswith("ok")]
    assert len(good) == 8 and all(r.split(",")[1] and not r.endswith("'") for r in good)


def test_predict_from_checkpoint_agrees_with_bundle_and_writes_json(bundle, trained_run, image_folder, tmp_path):
    main(["predict", str(image_folder), "--model", str(bundle), "--out", str(tmp_path / "a.json")])
    main(["predict", str(image_folder), "--model", str(trained_run), "--out", str(tmp_path / "b.json")])
    a, b = (json.loads((tmp_path / f).read_text()) for f in ("a.json", "b.json"))
    assert [r.get("top1") for r in a] == [r.get("top1") for r in b]
    assert max(abs(x["p1"] - y["p1"]) for x, y in zip(a, b, strict=True) if not x["error"]) < 1e-3


def test_one_schema_drives_the_csv_the_json_and_the_page(bundle, image_folder, tmp_path):
    """predict's CSV header, its JSON keys and the page's table all come from deploy/predict.Prediction: a field
    added there reaches the three (the directory's default file is answers.csv, not the test report's name)."""
    from kvasir_mobileone.deploy.predict import Prediction
    from kvasir_mobileone.deploy.serve import table_headers

    main(["predict", str(image_folder), "--model", str(bundle), "--out", str(tmp_path / "dir"), "--top_k", "2"])
    main(["predict", str(image_folder), "--model", str(bundle), "--out", str(tmp_path / "a.json"), "--top_k", "2"])
    columns = [f.name for f in dataclasses.fields(Prediction) if f.name != "top"]
    header = (tmp_path / "dir" / "answers.csv").read_text().splitlines()[0].split(",")
    assert header == Prediction.columns(2) and set(columns) < set(header) and {"top2", "p2"} < set(header)
    found = json.loads((tmp_path / "a.json").read_text())
    assert all(list(r) == Prediction.columns(2) for r in found if not r["error"]), found[0]
    titled = [f.metadata["page"] for f in dataclasses.fields(Prediction) if "page" in f.metadata and f.name != "top"]
    assert set(titled) < set(table_headers(2)) and {"top class", "class 2"} < set(table_headers(2))


def test_bundle_prediction_needs_no_lightning_timm_or_torch(bundle, image_folder):
    code = (
        "import sys; from kvasir_mobileone.commands.predict import predict; "
        f"predict([{str(image_folder)!r}], model={str(bundle)!r}); "
        "loaded = [m for m in ('lightning', 'timm', 'torch') if m in sys.modules]; "
        "assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, env=os.environ | {"NO_COLOR": "1"})


def test_a_parity_failure_stops_the_export(trained_run, tmp_path):
    from kvasir_mobileone.deploy.export import ParityError

    with pytest.raises(ParityError, match="must not be used"):  # fused and unfused differ by ~1e-6, never by 0
        main(["export", str(trained_run), "--out", str(tmp_path / "b"), "--tolerance", "0"])
    assert not (tmp_path / "b" / "metadata.json").exists()


def test_explain_writes_titled_heatmaps(trained_run, tiny_data, image_folder, tmp_path):
    (image_folder / "sub").mkdir(exist_ok=True)
    shutil.copy(image_folder / "ok 0 é.jpg", image_folder / "sub" / "ok 0 é.jpg")  # same name, other folder
    main(
        [
            "predict",
            str(image_folder),
            "--model",
            str(trained_run),
            "--explain",
            "true",
            "--explain_dir",
            str(tmp_path / "cam"),
        ]
    )
    shutil.rmtree(image_folder / "sub")
    pngs = sorted((tmp_path / "cam").glob("*_gradcam.png"))
    assert len(pngs) == 9 and (tmp_path / "cam" / "sub__ok 0 é_gradcam.png").is_file()
    names = {p.name for p in tiny_data.iterdir() if p.is_dir() and not p.name.startswith(".")}
    for png in pngs:
        with Image.open(png) as image:
            title = image.text["Title"]  # the figure's titles (io.save_figure)
            assert image.format == "PNG" and image.size[0] > 400
        original = png.name.removesuffix("_gradcam.png").split("__")[-1]
        assert title.startswith(original) and ": predicted " in title and "Grad-CAM" in title, title
        assert title.split(": predicted ")[1].split(" (p = ")[0] in names, title


def readme_snippet(word: str) -> str:
    """The first python block of the README or its guides (docs/) that holds `word`."""
    text = "\n".join(p.read_text() for p in [README, *sorted((README.parent / "docs").glob("*.md"))])
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    return next(b for b in blocks if word in b)


def test_readme_snippets_run_as_written(bundle, tiny_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(bundle, tmp_path / "bundle")
    shutil.copy(next(tiny_data.glob("*/synth_00000.jpg")), tmp_path / "bundle" / "image.jpg")
    onnx_ns: dict = {}
    monkeypatch.chdir(tmp_path / "bundle")  # the plain-onnxruntime example (the guide points to it) runs in a bundle
    exec(ONNXRUNTIME_EXAMPLE.read_text(), onnx_ns)
    monkeypatch.chdir(tmp_path)
    timm_ns: dict = {}
    exec(readme_snippet("reparameterize_model"), timm_ns)
    import torch

    with torch.no_grad():
        torch_logits = timm_ns["model"](torch.from_numpy(onnx_ns["x"])).numpy()
    assert onnx_ns["logits"].shape == (1, 4)
    assert np.allclose(torch_logits, onnx_ns["logits"], rtol=1e-3, atol=1e-4)


def test_heatmap_names_never_collide(tmp_path):
    from kvasir_mobileone.deploy.explain import output_names

    paths = [tmp_path / "a" / "img.jpg", tmp_path / "b" / "img.jpg", tmp_path / "a" / "other.jpg"]
    assert output_names(paths) == ["a__img_gradcam.png", "b__img_gradcam.png", "a__other_gradcam.png"]


def test_the_model_cards_snippet_preprocesses_exactly_as_predict_mask_included(bundle, tiny_data, tmp_path):
    masked = tmp_path / "masked"
    shutil.copytree(bundle, masked)
    meta = json.loads((masked / "metadata.json").read_text())
    meta["input"]["mask"] = [[0.0, 0.0, 0.5, 0.3], [0.8, 0.6, 1.0, 1.0]]  # as a run with --data.mask_regions records
    size = meta["input"]["image_size"]
    visible = np.ones((size, size), bool)  # and a field of view whose right edge is out, as --data.field_of_view
    visible[:, -size // 5 :] = False
    meta["input"]["field_of_view"] = encode_view(visible)
    write_view_png(masked / "field_of_view.png", visible)
    (masked / "metadata.json").write_text(json.dumps(meta))
    snippet = (masked / "README.md").read_text().split("```python\n")[1].split("```")[0]
    image = tiny_data / "esophagitis" / "synth_00003.jpg"

    def run_snippet(folder: Path) -> dict:
        code = (
            snippet.replace('"metadata.json"', repr(str(folder / "metadata.json")))
            .replace('"model.onnx"', repr(str(folder / "model.onnx")))
            .replace('"image.jpg"', repr(str(image)))
            .replace('"field_of_view.png"', repr(str(folder / "field_of_view.png")))
            .replace('"uncertainty.npz"', repr(str(folder / "uncertainty.npz")))
        )
        scope: dict = {}
        exec(code, scope)
        return scope

    card = run_snippet(masked)
    assert np.array_equal(card["x"][0], ModelInput.from_dict(meta["input"]).read(image)[0])  # bit for bit
    size = meta["input"]["image_size"]
    assert card["pixels"][: round(0.3 * size), : round(0.5 * size)].max() == 0
    assert card["pixels"][:, -size // 5 :].max() == 0 and card["pixels"][:, : size // 2].max() > 0
    assert not np.allclose(card["logits"], run_snippet(bundle)["logits"])  # the mask changes the answer's input
    answer = main(["predict", str(image), "--model", str(masked), "--precision", "fp32"])[0]
    probs = softmax(card["logits"])
    if meta.get("temperature"):
        probs = apply_temperature(probs, meta["temperature"])
    assert answer["top1"] == meta["class_names"][int(probs.argmax())]
    assert answer["p1"] == pytest.approx(float(probs.max()), abs=1e-5)
    # and the same "I don't know" answer: class, "not sure" or "outside the training data", and the same set
    assert (answer["answer"], answer["prediction_set"]) == (card["answer"], card["answer_set"])
