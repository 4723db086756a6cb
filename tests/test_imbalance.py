"""Imbalanced classes and doubtful labels (issue 21): one macro-F1 everywhere, checkpoint selection by it, class
weights and balanced sampling, per-class intervals and balanced accuracy, and label issues found by cleanlab on the
out-of-fold predictions of `kvasir cv`. resnet10t learns the synthetic classes in seconds; every timm model is
trained alike."""

import json

import numpy as np
import pytest
import torch
import yaml

from fitflags import fit_flags
from kvasir_mobileone.cli import main
from kvasir_mobileone.data.datamodule import balanced_sampling_weights
from kvasir_mobileone.data.folder import DataError
from kvasir_mobileone.data.split import make_split, read_exclusions
from kvasir_mobileone.data.synth import PLANTED_FLIPS, synth
from kvasir_mobileone.errors import UserError
from kvasir_mobileone.evaluation.metrics import balanced_accuracy, macro_f1, present_classes
from kvasir_mobileone.evaluation.stats import mcnemar
from kvasir_mobileone.io import read_csv
from kvasir_mobileone.models.classifier import Classifier, ModelConfig, balanced_class_weights
from kvasir_mobileone.models.metrics import PresentClassesF1, PresentClassesRecall

BIG = ("dyed-lifted-polyps", "esophagitis", "normal-cecum")
SMALL = "polyps"
FIT = fit_flags(epochs=8)


def test_val_macro_f1_is_the_reports_macro_f1():
    """The issue's case: a class predicted but absent from the targets. torchmetrics' macro average scores it 0;
    the report (and now the logged val/f1_macro, which picks checkpoints) averages the classes present."""
    targets = np.array([0, 0, 1, 1, 2, 2])
    predicted = np.array([0, 0, 1, 3, 2, 2])  # class 3 predicted once, never true
    report = float(macro_f1(targets, predicted, present_classes(targets)))
    logged = PresentClassesF1(4)
    logged.update(torch.nn.functional.one_hot(torch.tensor(predicted), 4).float(), torch.tensor(targets))
    assert float(logged.compute()) == pytest.approx(report) and report == pytest.approx((1 + 2 / 3 + 1) / 3)
    recall = PresentClassesRecall(4)
    recall.update(torch.nn.functional.one_hot(torch.tensor(predicted), 4).float(), torch.tensor(targets))
    assert float(recall.compute()) == pytest.approx(balanced_accuracy(targets, predicted, present_classes(targets)))


def test_class_weights_and_sampling_weights_give_every_class_the_same_total():
    counts = [100, 10, 0, 2]
    weights = balanced_class_weights(counts)
    assert weights[2] == 0 and all(w * n == pytest.approx(112 / 3) for w, n in zip(weights, counts, strict=True) if n)
    labels = ["a"] * 8 + ["b"] * 2
    sampling = balanced_sampling_weights(labels)
    assert float(sampling[:8].sum()) == pytest.approx(0.5) and float(sampling[8:].sum()) == pytest.approx(0.5)


@pytest.fixture(scope="module")
def small_class(tmp_path_factory):
    """Three classes of 60 images and one of 6; and 50 more images of the small class, made apart (another seed),
    the held-out test of that class."""
    root = tmp_path_factory.mktemp("imbalance")
    data = synth(str(root / "data"), images_per_class=60, seed=4, scale=0.1, classes=BIG)
    synth(str(root / "data"), images_per_class=6, seed=5, scale=0.1, classes=(SMALL,))
    held_out = synth(str(root / "held_out"), images_per_class=50, seed=6, scale=0.1, classes=(SMALL,))
    return root, data, held_out


def small_class_recall(run, held_out) -> np.ndarray:
    answers = main(["predict", str(held_out / SMALL), "--model", str(run)])
    return np.array([a["top1"] == SMALL for a in answers])


@pytest.mark.slow
def test_macro_f1_selection_and_class_weights_raise_the_small_class_recall(small_class):
    """Paired, same seed and split: val/acc selection without weights (the original workflow) against val/f1_macro
    selection with balanced class weights, on 50 held-out images of the 6-image class."""
    root, data, held_out = small_class
    where = ["--data.data_dir", str(data), *FIT, "--trainer.runs_dir", str(root / "runs")]
    main(["fit", *where, "--trainer.run_name", "acc", "--trainer.monitor", "val/acc"])
    same_split = ["--data.manifest", str(root / "runs" / "acc" / "split_manifest.csv")]
    main(
        ["fit", *where, *same_split, "--trainer.run_name", "f1w"]
        + ["--trainer.monitor", "val/f1_macro", "--model.class_weights", "balanced"]
    )
    before, after = (small_class_recall(root / "runs" / name, held_out) for name in ("acc", "f1w"))
    paired = mcnemar(after, before)
    assert after.mean() > before.mean() and paired["p_value"] < 0.05, (before.mean(), after.mean(), paired)
    ckpt = torch.load(root / "runs" / "f1w" / "checkpoints" / "best.ckpt", weights_only=True)
    assert ckpt["hyper_parameters"]["class_weights"][3] > 5 * ckpt["hyper_parameters"]["class_weights"][0]
    # every report: per-class recall with its Wilson interval, balanced accuracy with its interval; compare too
    metrics = json.loads((root / "runs" / "f1w" / "test" / "metrics.json").read_text())
    low, high = metrics["per_class"][SMALL]["recall_ci"]
    assert low <= metrics["per_class"][SMALL]["recall"] <= high and high - low > 0.3  # 1 or 2 test images: wide
    assert metrics["balanced_accuracy_ci"][0] <= metrics["balanced_accuracy"] <= metrics["balanced_accuracy_ci"][1]
    assert "recall_ci_low" in read_csv(root / "runs" / "f1w" / "test" / "per_class.csv")[0]
    compared = main(["compare", str(root / "runs" / "acc"), str(root / "runs" / "f1w"), "--out", str(root / "cmp")])
    rows = json.loads((root / "cmp" / "comparison.json").read_text())["runs"]
    assert rows[1]["balanced_accuracy"] == pytest.approx(metrics["balanced_accuracy"]) and compared


@pytest.mark.parametrize("loader", ["workers", "resident"])
def test_balanced_sampling_draws_every_class_alike_in_both_loaders(small_class, loader):
    """--data.sampler balanced: over 20 epochs the 6-image class is drawn as often as each 60-image class (each
    share within its 99% binomial interval of 1/4), where shuffling draws it 6/186 of the time."""
    from scipy.stats import binomtest

    from kvasir_mobileone.data.datamodule import DataConfig, ImageFolderDataModule
    from kvasir_mobileone.data.folder import scan_image_folder
    from kvasir_mobileone.data.split import make_split
    from kvasir_mobileone.images import ModelInput

    _, data, _ = small_class
    rows = make_split(scan_image_folder(data), 0.1, 0.1, seed=0)
    cfg = DataConfig(data_dir=str(data), batch_size=16, num_workers=0, loader=loader, sampler="balanced")
    module = ImageFolderDataModule(cfg, rows, ModelInput(24, (0.5,) * 3, (0.25,) * 3), seed=0)
    module.setup("fit")
    loader, drawn = module.loader("train", shuffle=True), []  # made once, as Lightning does: new draws each epoch
    for _ in range(20):
        drawn += [int(t) for batch in loader for t in batch[1]]
    counts = np.bincount(drawn, minlength=4)
    for count in counts:
        low, high = binomtest(int(count), len(drawn)).proportion_ci(0.99)
        assert low <= 0.25 <= high, counts


@pytest.mark.slow
def test_label_issues_find_planted_flips_and_fit_leaves_them_out(tmp_path):
    """5% of the labels flipped on purpose; cleanlab on the out-of-fold probabilities of a 3-fold cv flags them."""
    data = synth(str(tmp_path / "d"), images_per_class=50, seed=3, scale=0.1, classes=(*BIG, SMALL), flip_fraction=0.05)
    planted = {r["path"] for r in read_csv(tmp_path / "d" / PLANTED_FLIPS)}
    assert len(planted) == 10
    main(
        ["cv", "--folds", "3", "--data.data_dir", str(data), *FIT, "--trainer.runs_dir", str(tmp_path)]
        + ["--trainer.run_name", "cv"]
    )
    issues = main(["label-issues", str(tmp_path / "cv")])
    flagged = {r["path"] for r in issues if r["flagged_by"].startswith("cleanlab")}
    found = flagged & planted
    precision, recall = len(found) / max(len(flagged), 1), len(found) / len(planted)
    assert precision >= 0.6 and recall >= 0.6, (precision, recall, sorted(flagged), sorted(planted))
    listing = tmp_path / "cv" / "label_issues" / "label_issues.csv"
    report = (tmp_path / "cv" / "label_issues" / "report.md").read_text()
    assert (
        "leaking folds hide label errors" in report.lower()
        and (tmp_path / "cv" / "label_issues" / "label_issues.png").is_file()
    )
    # the CSV is an exclusion list as it is: fit leaves those images out of every split, and says so
    run = main(
        ["fit", "--data.data_dir", str(data), *FIT, "--trainer.runs_dir", str(tmp_path)]
        + ["--trainer.run_name", "clean", "--data.exclude", str(listing), "--trainer.max_epochs", "1"]
    )
    kept = {r["path"] for r in read_csv(run / "split_manifest.csv")}
    assert not kept & {r["path"] for r in read_csv(listing)} and len(kept) == 200 - len(read_csv(listing))
    metrics = json.loads((run / "test" / "metrics.json").read_text())
    assert (
        metrics["excluded"] == len(read_csv(listing))
        and "## Excluded images" in (run / "test" / "report.md").read_text()
    )


def test_label_issues_needs_out_of_fold_predictions(tiny_data, tmp_path):
    """A run's test predictions cover its test split only; a cv folder's cover every image, each from a model
    that did not train on it (out of fold): label-issues refuses anything but a cv folder, though a run folder
    has every file it reads."""
    run = tmp_path / "run"
    (run / "test").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"data": {"data_dir": str(tiny_data)}}))
    names = sorted(p.name for p in tiny_data.iterdir() if p.is_dir() and not p.name.startswith("."))
    lines = ["path,label,predicted," + ",".join(f"p_{c}" for c in names)]
    for k, c in enumerate(names * 3):
        p = [0.9 if c == other else 0.1 / (len(names) - 1) for other in names]
        lines.append(f"{c}/synth_{k:05d}.jpg,{c},{c}," + ",".join(map(str, p)))
    (run / "test" / "predictions.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match="is not a `kvasir cv` folder: label-issues needs every image predicted"):
        main(["label-issues", str(run)])


@pytest.mark.parametrize(("monitor", "best"), [("val/loss", np.argmin), ("val/balanced_acc", np.argmax)])
def test_best_ckpt_is_the_epoch_the_monitor_picks(tiny_data, tmp_path, monitor, best):
    """--trainer.monitor: best.ckpt is the epoch with the best logged value (the first, on ties)."""
    fit = [*FIT[: FIT.index("--trainer.max_epochs")], "--trainer.max_epochs", "5", "--trainer.logger", "csv"]
    run = main(
        ["fit", "--data.data_dir", str(tiny_data), *fit, "--trainer.runs_dir", str(tmp_path)]
        + ["--trainer.monitor", monitor, "--test_after", "false"]
    )
    logged = [r for r in read_csv(run / "csv_logs" / "metrics.csv") if r.get(monitor)]
    values = np.array([float(r[monitor]) for r in logged])
    ckpt = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)
    assert len(values) == 5 and ckpt["epoch"] == int(logged[int(best(values))]["epoch"]), (values, ckpt["epoch"])


def test_the_training_loss_is_class_weighted_and_the_val_loss_is_not():
    """--model.class_weights balanced: the training step's loss is cross-entropy weighted N / (K x n_c); val's is
    plain; the weights come back with the checkpoint's hyperparameters."""
    module = Classifier(
        ["a", "b"], ModelConfig(name="resnet10t", pretrained=False, class_weights="balanced"), class_counts=[90, 10]
    )
    assert module.loss_weights.tolist() == pytest.approx([100 / 180, 100 / 20])
    torch.manual_seed(0)
    batch = (torch.randn(6, 3, 32, 32), torch.tensor([0, 1, 1, 0, 0, 0]), torch.arange(6))
    module.eval()  # the same logits in both steps (no BatchNorm statistics update)
    with torch.no_grad():
        logits = module(batch[0])
        train, val = module._shared_step(batch, "train"), module._shared_step(batch, "val")
    weighted = torch.nn.functional.cross_entropy(logits, batch[1], weight=module.loss_weights)
    assert float(train) == pytest.approx(float(weighted)) and float(val) == pytest.approx(
        float(torch.nn.functional.cross_entropy(logits, batch[1]))
    )
    assert float(train) != pytest.approx(float(val))
    assert module.hparams["class_weights"] == pytest.approx([100 / 180, 100 / 20])


def test_exclusions_are_read_as_the_split_spells_paths(tmp_path):
    data = tmp_path / "data"
    (data / "polyps").mkdir(parents=True)
    listing = tmp_path / "exclude.txt"
    listing.write_text(f"# doubtful\n./polyps/a.jpg\n{data / 'polyps' / 'b.jpg'}\n\npolyps/c.jpg\n")
    assert read_exclusions(listing, data) == {"polyps/a.jpg", "polyps/b.jpg", "polyps/c.jpg"}
    csv = tmp_path / "issues.csv"
    csv.write_text("rank,path\n1,polyps/a.jpg\n")
    assert read_exclusions(csv, data) == {"polyps/a.jpg"}
    csv.write_text("rank,file\n1,polyps/a.jpg\n")
    with pytest.raises(DataError, match="has no `path` column"):
        read_exclusions(csv, data)


def test_a_tiny_class_is_split_class_by_class_but_a_zero_fraction_is_still_an_error():
    items = [(f"big/{i}.jpg", "big") for i in range(60)] + [(f"small/{i}.jpg", "small") for i in range(6)]
    rows = make_split(items, 0.1, 0.1, seed=0)
    small = [r["split"] for r in rows if r["label"] == "small"]
    assert small.count("test") == 1 and small.count("val") == 1 and small.count("train") == 4
    with pytest.raises(DataError, match="above 0 and below 1"):
        make_split(items, 0.0, 0.1, seed=0)
