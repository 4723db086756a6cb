import numpy as np
import pytest
from sklearn import metrics as skm

from kvasir_mobileone.evaluation.metrics import compute_metrics, macro_f1

CLASSES = ["a", "b", "c", "d", "e", "f"]


@pytest.fixture
def arrays():
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 6, 200)
    logits = rng.normal(size=(200, 6))
    logits[np.arange(200), targets] += 1.5  # better than chance, far from perfect
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return probs, targets


def test_metrics_match_sklearn(arrays):
    probs, targets = arrays
    m = compute_metrics(probs, targets, CLASSES)
    pred = probs.argmax(1)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(targets, pred))
    assert m["top3"] == pytest.approx(skm.top_k_accuracy_score(targets, probs, k=3))
    assert m["top5"] == pytest.approx(skm.top_k_accuracy_score(targets, probs, k=5))
    assert m["f1_macro"] == pytest.approx(skm.f1_score(targets, pred, average="macro"))
    assert m["f1_micro"] == pytest.approx(skm.f1_score(targets, pred, average="micro"))
    assert m["mcc"] == pytest.approx(skm.matthews_corrcoef(targets, pred), abs=1e-6)
    assert m["loss"] == pytest.approx(skm.log_loss(targets, probs))
    assert m["confusion_matrix"] == skm.confusion_matrix(targets, pred).tolist()
    precision, recall, f1, support = skm.precision_recall_fscore_support(targets, pred)
    for i, name in enumerate(CLASSES):
        assert m["per_class"][name]["precision"] == pytest.approx(precision[i])
        assert m["per_class"][name]["recall"] == pytest.approx(recall[i])
        assert m["per_class"][name]["f1"] == pytest.approx(f1[i])
        assert m["per_class"][name]["support"] == support[i]


def test_top_k_not_reported_when_k_covers_all_classes(arrays):
    probs, targets = arrays
    m = compute_metrics(probs[:, :3] / probs[:, :3].sum(1, keepdims=True), targets % 3, CLASSES[:3])
    assert m["top3"] is None and m["top5"] is None


def test_one_macro_f1_that_matches_sklearn_when_a_class_is_absent():
    """Class 2 is never predicted and class 3 has no test image (but is predicted once)."""
    targets = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    predicted = np.array([0, 0, 1, 1, 3, 0, 1, 1])
    present = [0, 1, 2]
    expected = skm.f1_score(targets, predicted, labels=present, average="macro", zero_division=0)
    assert macro_f1(targets, predicted, present) == pytest.approx(expected)
    probs = np.eye(4)[predicted] * 0.9 + 0.025
    m = compute_metrics(probs, targets, ["a", "b", "c", "d"])
    assert m["f1_macro"] == pytest.approx(expected) and m["classes_without_test_images"] == ["d"]
    # vectorised over resamples: each row equals the scalar function on that row
    rows = np.stack([targets, targets[::-1]]), np.stack([predicted, predicted[::-1]])
    assert macro_f1(*rows, present).tolist() == pytest.approx([expected, expected])


def test_report_metrics_and_compare_use_the_same_functions(tmp_path):
    from kvasir_mobileone.evaluation.report import evaluate
    from kvasir_mobileone.evaluation.stats import wilson_interval

    targets = np.array([0, 0, 0, 1, 1, 2, 2, 2, 1, 0])
    probs = np.eye(3)[np.array([0, 0, 1, 1, 1, 0, 2, 2, 1, 0])] * 0.8 + 0.2 / 3
    m = evaluate(probs, targets, ["a", "b", "c"])
    assert m["accuracy_ci"] == pytest.approx(wilson_interval(8, 10))
    assert m["f1_macro_ci"][0] <= m["f1_macro"] <= m["f1_macro_ci"][1]


def test_two_models_that_agree_everywhere_get_an_honest_interval_not_a_point():
    """No disagreement on 16 images does not prove equal accuracy: the interval of A - B keeps a width."""
    from kvasir_mobileone.evaluation.intervals import paired_difference

    targets = np.arange(16) % 4
    low, high = paired_difference(targets, targets, targets)["accuracy_difference_ci"]
    assert low < 0 < high and high - low > 0.1
    wrong = targets.copy()
    wrong[:3] = (wrong[:3] + 1) % 4  # B misses three that A gets right: the bootstrap interval, above 0
    low, high = paired_difference(targets, targets, wrong)["accuracy_difference_ci"]
    assert 0 < low < 3 / 16 < high
