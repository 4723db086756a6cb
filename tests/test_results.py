"""Statistics (McNemar, bootstrap, ECE, temperature), compare, cross-validation, features + classical ML."""

import json
import shutil
from math import comb

import numpy as np
import pytest

from kvasir_mobileone.cli import main
from kvasir_mobileone.compare import IncomparableRunsError
from kvasir_mobileone.stats import (
    accuracy,
    apply_temperature,
    bootstrap_ci,
    expected_calibration_error,
    fit_temperature,
    mcnemar,
    softmax,
)

TINY_FIT = ["--data.image_size", "32", "--data.batch_size", "8", "--data.num_workers", "0",
            "--model.name", "mobileone_s0", "--model.pretrained", "false", "--trainer.precision", "32-true",
            "--trainer.logger", "none"]  # fmt: skip


def test_mcnemar_exact_on_a_known_table():
    a = np.array([True] * 10 + [False] * 2 + [True] * 30 + [False] * 5)  # b = 10 only-A, c = 2 only-B
    b = np.array([False] * 10 + [True] * 2 + [True] * 30 + [False] * 5)
    result = mcnemar(a, b)
    by_hand = 2 * sum(comb(12, k) for k in range(3)) / 2**12  # two-sided exact binomial, p = 0.5
    assert result["only_a_correct"] == 10 and result["only_b_correct"] == 2
    assert result["p_value"] == pytest.approx(by_hand) and by_hand == pytest.approx(0.03857, abs=1e-5)
    assert mcnemar(a, a)["p_value"] == 1.0


def test_bootstrap_interval_covers_the_true_accuracy_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    covered = 0
    for trial in range(100):
        targets = np.zeros(400, int)
        predicted = (rng.random(400) > 0.8).astype(int)  # true accuracy 0.8
        low, high = bootstrap_ci(targets, predicted, accuracy, n_resamples=500, seed=trial)
        covered += low <= 0.8 <= high
    assert 88 <= covered <= 100


def test_ece_on_hand_made_predictions():
    probs = np.tile([0.9, 0.1], (10, 1))
    assert expected_calibration_error(probs, np.array([0] * 5 + [1] * 5))["ece"] == pytest.approx(0.4)
    assert expected_calibration_error(probs, np.array([0] * 9 + [1]))["ece"] == pytest.approx(0.0, abs=1e-9)


def test_temperature_recovers_a_known_overconfidence():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, (4000, 5))
    targets = np.array([rng.choice(5, p=p) for p in softmax(logits)])  # calibrated at T = 1 ...
    overconfident = softmax(logits * 3)  # ... so these need T = 3
    temperature = fit_temperature(overconfident, targets)
    assert temperature == pytest.approx(3.0, rel=0.1)
    assert np.allclose(apply_temperature(overconfident, temperature), softmax(logits), atol=0.05)


@pytest.fixture(scope="module")
def classical(trained_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("features")
    main(["features", str(trained_run), "--out", str(out), "--num_workers", "0"])
    return out


def test_features_then_classical_models_above_chance(classical):
    data = np.load(classical / "features.npz")
    assert data["embeddings"].shape == (160, 1024) and set(data["splits"]) == {"train", "val", "test"}
    summary = json.loads((classical / "classical_summary.json").read_text())
    assert {s["model"] for s in summary} == {"logreg", "linear_svm", "random_forest", "knn"}
    assert max(s["test_accuracy"] for s in summary) > 0.5  # 4 classes: chance is 0.25
    for s in summary:
        metrics = json.loads((classical / s["model"] / "test" / "metrics.json").read_text())
        assert metrics["n"] == 16 and metrics["accuracy"] == s["test_accuracy"]


def test_compare_network_and_classical_rows(trained_run, classical, tmp_path):
    main(["test", str(trained_run), "--num_workers", "0"])  # predictions of the network on the same split
    main(["compare", str(trained_run), str(classical / "logreg"), str(classical / "knn"), "--out", str(tmp_path)])
    result = json.loads((tmp_path / "comparison.json").read_text())
    assert [r["run"] for r in result["runs"]] == ["r", "logreg", "knn"] and len(result["pairs"]) == 3
    network = result["runs"][0]
    assert network["accuracy_ci_low"] <= network["accuracy"] <= network["accuracy_ci_high"]
    assert network["params_fused"] < network["params_train"]
    assert all(0 <= p["p_value"] <= 1 for p in result["pairs"])
    assert "McNemar exact p" in (tmp_path / "comparison.md").read_text() and (tmp_path / "comparison.png").is_file()


def test_cross_validation_summary_and_compare_refusal(tiny_data, trained_run, tmp_path):
    for name, lr in (("cvA", "0.003"), ("cvB", "0.001")):
        where = ["--trainer.runs_dir", str(tmp_path), "--trainer.run_name", name]
        main(["cv", "--folds", "2", "--data.data_dir", str(tiny_data), *TINY_FIT, "--model.lr", lr,
              "--trainer.max_epochs", "2", *where])  # fmt: skip
    summary = json.loads((tmp_path / "cvA" / "cv_summary.json").read_text())
    assert len(summary["per_metric"]["accuracy"]["folds"]) == 2 and summary["per_metric"]["accuracy"]["std"] >= 0
    pooled = json.loads((tmp_path / "cvA" / "test" / "metrics.json").read_text())
    assert pooled["n"] == 160  # every image tested exactly once, out of fold
    for k in range(2):
        assert (tmp_path / "cvA" / f"fold{k}" / "checkpoints" / "best.ckpt").is_file()
    main(["compare", str(tmp_path / "cvA"), str(tmp_path / "cvB"), "--out", str(tmp_path / "cmp")])
    assert json.loads((tmp_path / "cmp" / "comparison.json").read_text())["test_images"] == 160
    with pytest.raises(IncomparableRunsError, match="different images"):
        main(["compare", str(tmp_path / "cvA"), str(trained_run), "--out", str(tmp_path / "bad")])


def test_tta_and_temperature_are_reported_and_exported(trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("wandb", "test"))
    metrics = main(["test", str(run), "--tta", "true", "--calibrate", "true", "--num_workers", "0"])
    temperature = json.loads((run / "temperature.json").read_text())["temperature"]
    assert list(metrics["variants"]) == ["plain", "flip TTA", f"flip TTA + temperature {temperature:.3f}"]
    plain, tta = metrics["variants"]["plain"], metrics["variants"]["flip TTA"]
    assert plain["loss"] != tta["loss"]  # the flipped view changes the probabilities
    report = (run / "test" / "report.md").read_text()
    assert "Test-time augmentation and calibration" in report and (run / "test" / "reliability.png").is_file()
    main(["export", str(run), "--out", str(tmp_path / "bundle")])
    assert json.loads((tmp_path / "bundle" / "metadata.json").read_text())["temperature"] == temperature
