"""'I don't know': out-of-distribution flags, abstention and prediction sets, from the rules (answers.py) to the
report, the checkpoint, the bundle and `kvasir predict`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from kvasir_mobileone.answers import (
    DETECTORS,
    OUTSIDE,
    Uncertainty,
    UncertaintyConfig,
    aps_scores,
    prediction_sets,
    softmax,
)
from kvasir_mobileone.data.foreign import FIVE, write_foreign
from kvasir_mobileone.errors import UserError
from kvasir_mobileone.evaluation.uncertainty import (
    Outputs,
    conformal_quantile,
    fit_detector,
    fit_uncertainty,
    selective_threshold,
)
from kvasir_mobileone.io import read_csv
from kvasir_mobileone.runs import METADATA_NAME, UNCERTAINTY_NAME, RunFolder


def calibrated(n: int, classes: int = 6, seed: int = 0, spread: float = 2.0):
    """Logits and labels drawn from the softmax itself: a perfectly calibrated model."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, spread, (n, classes))
    probs = softmax(logits)
    targets = np.array([rng.choice(classes, p=p) for p in probs])
    return logits, probs, targets


def test_conformal_sets_cover_as_promised_within_their_interval():
    """Split-conformal coverage is at least 90% and at most 90% + 1/(n+1) on average over calibration draws:
    200 random splits of a calibrated model's images into 500 to calibrate on and 500 to check."""
    _, probs, y = calibrated(1000)
    true_scores = aps_scores(probs)[np.arange(1000), y]
    rng = np.random.default_rng(1)
    coverages, sizes = [], []
    for _ in range(200):
        order = rng.permutation(1000)
        cal, test = order[:500], order[500:]
        qhat = conformal_quantile(true_scores[cal], 0.9)
        coverages.append(np.mean(true_scores[test] <= qhat))
        sizes.append(np.mean([len(s) for s in prediction_sets(probs[test[:50]], qhat)]))
    sets = prediction_sets(probs[test], qhat)  # the sets themselves cover exactly where the scores say
    assert np.mean([t in s for t, s in zip(y[test], sets, strict=True)]) == coverages[-1]
    mean, se = np.mean(coverages), np.std(coverages, ddof=1) / np.sqrt(len(coverages))
    assert mean + 3 * se >= 0.9 and mean - 3 * se <= 0.9 + 1 / 501, (mean, se)
    assert 1 < np.mean(sizes) < 6  # adaptive: neither the top class alone nor every class


def test_a_confident_right_model_gets_sets_of_one_class():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 5, 600)
    logits = 12 * np.eye(5)[y] + rng.normal(0, 0.5, (600, 5))
    probs = softmax(logits)
    qhat = conformal_quantile(aps_scores(probs[:300])[np.arange(300), y[:300]], 0.9)
    assert [len(s) for s in prediction_sets(probs[300:], qhat)] == [1] * 300


def test_too_few_val_images_set_no_threshold_and_say_so():
    assert conformal_quantile(np.arange(18.0), 0.95) is None  # rank ceil(19 x 0.95) = 19 > 18
    assert conformal_quantile(np.arange(19.0), 0.95) == 18.0
    assert selective_threshold(np.full(10, 0.99), np.ones(10, bool), 0.05, 0.95)["threshold"] is None
    rng = np.random.default_rng(0)
    train = Outputs(rng.normal(size=(40, 3)), rng.normal(size=(40, 8)), rng.integers(0, 3, 40))
    val = Outputs(rng.normal(size=(8, 3)), rng.normal(size=(8, 8)), rng.integers(0, 3, 8))  # < 9: no 90% quantile
    found = fit_uncertainty(train, val, UncertaintyConfig())
    assert found.ood_threshold is None and found.qhat is None and found.confidence_threshold is None
    judged = found.judge(val.logits, val.features, ["a", "b", "c"])
    assert not any(j["outside"] for j in judged)
    assert all(j["prediction_set"].count(" or ") == 2 for j in judged)  # every class: nothing calibrated


def test_abstention_keeps_the_error_of_the_answered_below_its_target():
    rng = np.random.default_rng(0)

    def sample(n):
        confidence = rng.uniform(0.3, 1.0, n)
        return confidence, rng.uniform(size=n) < confidence  # right with probability = confidence

    found = selective_threshold(*sample(2000), target=0.1, level=0.95)
    assert found["threshold"] is not None and found["val_error_bound"] <= 0.1
    confidence, correct = sample(50_000)
    kept = confidence >= found["threshold"]
    assert 0.05 < kept.mean() < 0.6  # it answers some, not all
    assert (~correct[kept]).mean() <= 0.1, ((~correct[kept]).mean(), found)


def test_each_detector_scores_far_points_above_near_ones():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 5, (3, 16))
    y = rng.integers(0, 3, 600)
    features = centres[y] + rng.normal(0, 1, (600, 16))
    logits = features @ centres.T / 5
    train = Outputs(logits[:400], features[:400], y[:400])
    far = rng.normal(0, 1, (200, 16)) * 8 + 20
    for name in ("mahalanobis", "knn"):
        arrays, k = fit_detector(name, train)
        found = Uncertainty(name, 0.05, None, 0.05, None, 0.9, None, k, arrays)
        near, away = found.ood_scores(logits[400:], features[400:]), found.ood_scores(far @ centres.T / 5, far)
        assert roc_auc_score(np.r_[np.zeros(200), np.ones(200)], np.r_[near, away]) > 0.99, name


def test_a_bad_uncertainty_flag_is_refused_with_its_name():
    with pytest.raises(UserError, match="--uncertainty.detector 'odin'"):
        UncertaintyConfig(detector="odin")
    with pytest.raises(UserError, match="--uncertainty.coverage 1.5"):
        UncertaintyConfig(coverage=1.5)


def outputs_on(predictor, paths) -> tuple[np.ndarray, np.ndarray]:
    batch = np.stack([predictor.model_input.read(p)[0] for p in paths])
    return predictor.outputs(batch)


def test_the_detector_tells_held_out_classes_and_non_endoscopy_from_the_test_images(ood_data, ood_run, tmp_path):
    from kvasir_mobileone.deploy.runtime import load

    run, _ = ood_run
    predictor = load(str(run))
    found = predictor.uncertainty
    assert found is not None and found.ood_threshold is not None
    assert found.fitted["chosen"] == "auto" and found.detector == max(
        found.fitted["selection_auroc"], key=found.fitted["selection_auroc"].get
    )
    data = ood_data / "train"
    test = [data / r["path"] for r in read_csv(RunFolder(run).manifest) if r["split"] == "test"]
    held_out = sorted((ood_data / "held_out").rglob("*.jpg"))
    foreign = write_foreign(tmp_path)
    scores = {k: found.ood_scores(*outputs_on(predictor, v)) for k, v in (("test", test), ("held", held_out))}
    scores["foreign"] = found.ood_scores(*outputs_on(predictor, foreign))

    def auroc(other):
        return roc_auc_score(
            np.r_[np.zeros(len(scores["test"])), np.ones(len(scores[other]))], np.r_[scores["test"], scores[other]]
        )

    assert auroc("foreign") > 0.95 and auroc("held") > 0.8, (auroc("foreign"), auroc("held"))
    # the report recorded every detector side by side on the same images
    metrics = json.loads(RunFolder(run).test.metrics.read_text())
    assert set(metrics["uncertainty"]["ood"]["detectors"]) == set(DETECTORS)


def test_predict_flags_the_five_inputs_and_the_bundle_answers_as_the_run(ood_run, tmp_path):
    from kvasir_mobileone.cli import main

    run, bundle = ood_run
    five = [p for p in write_foreign(tmp_path / "foreign", crops=0) if p.stem in FIVE]
    assert len(five) == 5
    test = [
        str(RunFolder(run).read_config()["data"]["data_dir"] + "/" + r["path"])
        for r in read_csv(RunFolder(run).manifest)
        if r["split"] == "test"
    ]
    answers = {}
    for name, model in (("bundle", bundle), ("run", run)):
        out = tmp_path / f"{name}.csv"
        main(["predict", *map(str, five), *test, "--model", str(model), "--out", str(out)])
        answers[name] = {r["path"]: r for r in read_csv(out)}
    for p in five:
        row = answers["bundle"][str(p)]
        assert row["answer"] == OUTSIDE and row["outside"] == "True", row
    for path, row in answers["run"].items():
        other = answers["bundle"][path]
        assert (row["answer"], row["prediction_set"]) == (other["answer"], other["prediction_set"]), path
        assert float(row["ood_score"]) == pytest.approx(float(other["ood_score"]), rel=1e-4, abs=1e-5)
    flagged = sum(answers["bundle"][p]["answer"] == OUTSIDE for p in test)
    assert flagged <= len(test) // 4  # test images like the training ones are answered (5% false alarms aimed at)


def test_the_report_shows_the_ood_figures_risk_coverage_and_the_coverage_table(ood_run):
    run, bundle = ood_run
    report = RunFolder(run).test
    text = report.report.read_text()
    for heading in ("### Outside the training data", "### Abstention", "### Prediction sets at 90.0% coverage"):
        assert heading in text
    assert "does **not** hold for another hospital" in text
    for figure in (report.risk_coverage_png, report.ood_scores_png):
        assert figure.stat().st_size > 5000
    metrics = json.loads(report.metrics.read_text())
    conformal = metrics["uncertainty"]["conformal"]
    assert conformal["coverage"]["n"] == metrics["n"]
    assert sum(r["n"] for r in conformal["per_class"].values()) == metrics["n"]
    # the bundle carries what the checkpoint holds
    meta = json.loads((bundle / METADATA_NAME).read_text())
    from kvasir_mobileone.models.classifier import Classifier

    stored = Classifier.from_checkpoint(RunFolder(run).checkpoint()).uncertainty
    assert meta["uncertainty"]["ood_threshold"] == stored.ood_threshold
    assert meta["uncertainty_parity"]["answers_agree"] == 1.0


def test_a_checkpoint_without_a_detector_gets_one_from_kvasir_test(bundle):
    """trained_run was fitted with --test_after false: `kvasir test` (trained_run's build runs it) fitted the
    detector and wrote it into the checkpoint, and export carried it."""
    meta = json.loads((bundle / METADATA_NAME).read_text())
    assert meta["uncertainty"]["detector"] in DETECTORS
    assert (bundle / UNCERTAINTY_NAME).is_file()


def test_the_cards_plain_onnxruntime_code_answers_as_predict(ood_run, tmp_path):
    """The model card's snippet (numpy, Pillow, onnxruntime) gives predict's answer and set: a photo outside the
    training data, a test frame answered."""
    from kvasir_mobileone.cli import main

    run, bundle = ood_run
    snippet = (bundle / "README.md").read_text().split("```python\n")[1].split("```")[0]
    temple = next(p for p in write_foreign(tmp_path, crops=0) if p.stem == "temple")
    frame = next(
        RunFolder(run).read_config()["data"]["data_dir"] + "/" + r["path"]
        for r in read_csv(RunFolder(run).manifest)
        if r["split"] == "test"
    )
    for image in (temple, frame):
        code = snippet.replace('"image.jpg"', repr(str(image)))
        for name in ("metadata.json", "model.onnx", "uncertainty.npz", "field_of_view.png"):
            code = code.replace(f'"{name}"', repr(str(bundle / name)))
        scope: dict = {}
        exec(code, scope)
        expected = main(["predict", str(image), "--model", str(bundle)])[0]
        assert (scope["answer"], scope["answer_set"]) == (expected["answer"], expected["prediction_set"]), image
    assert (
        expected["answer"] != OUTSIDE and main(["predict", str(temple), "--model", str(bundle)])[0]["answer"] == OUTSIDE
    )
