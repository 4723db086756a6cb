import numpy as np
import pytest
from sklearn import metrics as skm

from kvasir_mobileone.evaluate import compute_metrics

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
