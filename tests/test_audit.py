"""The shortcut audit: a planted green box is found, a model trained with the box masked is not flagged, and
neither is a model trained on data without the shortcut. resnet10t learns these in seconds where MobileOne from
scratch needs minutes; the audit treats every timm model alike."""

import json

import numpy as np
import pytest

from fitflags import fit_flags, fit_run
from kvasir_mobileone.cli import main
from kvasir_mobileone.data.regions import REGIONS, mask_pixels, overlay_census, parse_regions
from kvasir_mobileone.data.synth import synth
from kvasir_mobileone.errors import UserError
from kvasir_mobileone.evaluation.audit import load_pixels, predict_pixels
from kvasir_mobileone.evaluation.audit_report import BASELINE_FINDINGS, baseline_finding
from kvasir_mobileone.evaluation.stats import mcnemar
from kvasir_mobileone.images import decode_resized
from kvasir_mobileone.io import read_csv
from kvasir_mobileone.models.loading import open_run

CLASSES = ("dyed-lifted-polyps", "esophagitis", "normal-cecum")
SHORTCUT = "esophagitis"
FIT = fit_flags(epochs=8, test_fraction=0.3)


def make_data(root, shortcut_class):
    return synth(str(root), images_per_class=40, seed=2, scale=0.1, classes=CLASSES, shortcut_class=shortcut_class)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three runs: planted shortcut; the same data with the box masked in training; data without a shortcut."""
    root = tmp_path_factory.mktemp("audit")
    planted, clean = make_data(root / "planted", SHORTCUT), make_data(root / "clean", None)
    plain = fit_run(planted, root / "runs", "planted", flags=FIT)
    same_split = ("--data.manifest", str(plain / "split_manifest.csv"))
    fit_run(planted, root / "runs", "masked", "--data.mask_regions", "[bottom-left-box]", *same_split, flags=FIT)
    fit_run(clean, root / "runs", "clean", flags=FIT)
    return {name: root / "runs" / name for name in ("planted", "masked", "clean")}


@pytest.fixture(scope="module")
def audits(runs):
    return {
        name: main(["audit", str(run), "--occlusion_per_class", "6", "--n_resamples", "500"])
        for name, run in runs.items()
    }


def by_region(result, fill="mean"):
    return {r["region"]: r for r in result["regions"] if r["fill"] == fill}


def test_a_planted_shortcut_is_flagged(audits, runs):
    result = audits["planted"]
    box = by_region(result)["bottom-left-box"]
    assert box["depends"] and box["p_holm"] < 0.01 and box["accuracy_drop"] > 0.2
    assert SHORTCUT in box["classes_losing"]
    assert [r for r, row in by_region(result).items() if row["depends"]] == ["bottom-left-box"]
    # the occlusion map lights the box for the planted class, and not for the others
    share = result["occlusion_region_share"]["bottom-left-box"]
    assert share[CLASSES.index(SHORTCUT)] > 2 and share[CLASSES.index(SHORTCUT)] > 2 * max(
        s for i, s in enumerate(share) if CLASSES[i] != SHORTCUT
    )
    baseline = result["shortcut_baseline"]
    assert baseline["accuracy"] >= baseline["chance"] + 0.2  # the box alone predicts the class
    assert "a shortcut is open to it" in result["verdict"]
    assert result["census"][SHORTCUT]["green_box"] == 1.0 and result["census"]["normal-cecum"]["green_box"] == 0.0
    report = (runs["planted"] / "audit" / "report.md").read_text()
    assert report.splitlines()[2].startswith("**Verdict: the model depends on bottom-left-box**")
    assert (runs["planted"] / "audit" / "occlusion.png").is_file()
    assert (runs["planted"] / "audit" / "examples_bottom-left-box.png").is_file()
    # the bundle's model card carries the verdict: the region, its drop with interval, and p
    bundle = runs["planted"].parent / "planted_bundle"
    main(["export", str(runs["planted"]), "--out", str(bundle)])
    card = (bundle / "README.md").read_text()
    assert "the model depends on bottom-left-box (accuracy −" in card and "Holm p = " in card
    assert json.loads((bundle / "metadata.json").read_text())["audit"]["depends"][0]["region"] == "bottom-left-box"


def test_masking_the_region_in_training_removes_the_dependence(audits, runs):
    result = audits["masked"]
    assert not any(r["depends"] for r in result["regions"])
    assert result["trained_mask"] == [list(REGIONS["bottom-left-box"][0])]
    # the baseline reads the images as the model sees them: with the box black, nothing class-specific is left
    baseline = result["shortcut_baseline"]
    assert baseline["accuracy_ci"][0] <= baseline["chance"] and baseline["finding"] == "little", baseline
    # the data as it is still allows the shortcut: the census says so whatever the model does
    assert result["census"][SHORTCUT]["green_box"] == 1.0
    # the mask travels: checkpoint, bundle metadata, and predict applies it
    bundle = runs["masked"].parent / "masked_bundle"
    main(["export", str(runs["masked"]), "--out", str(bundle)])
    assert json.loads((bundle / "metadata.json").read_text())["input"]["mask_regions"] == ["bottom-left-box"]
    assert "no dependence on any audited region was found" in (bundle / "README.md").read_text()
    # an audit of another checkpoint is not quoted as this model's
    audit_json = runs["masked"] / "audit" / "audit.json"
    found = json.loads(audit_json.read_text())
    audit_json.write_text(json.dumps(found | {"checkpoint_sha256": "0" * 64}))
    main(["export", str(runs["masked"]), "--out", str(bundle.with_name("stale_bundle"))])
    audit_json.write_text(json.dumps(found))
    assert "the run's audit is of another checkpoint" in (bundle.with_name("stale_bundle") / "README.md").read_text()
    image = next((runs["masked"].parents[1] / "planted" / SHORTCUT).glob("*.jpg"))
    from kvasir_mobileone.deploy.runtime import load

    x, pixels = load(bundle).model_input.read(image)
    assert pixels[-3:, :3].max() == 0  # bottom-left corner blacked before the network sees it


def test_the_masked_model_learned_the_tissue_where_the_planted_model_learned_the_box(runs):
    """Training saw the box blacked out: on the test images with the box blacked out, the masked model beats the
    planted one (which learned the box), paired (McNemar). Were the mask applied only at test time, the two would
    be the same model and give the same answers."""
    planted, masked = open_run(str(runs["planted"])), open_run(str(runs["masked"]))
    rows = [r for r in read_csv(runs["masked"] / "split_manifest.csv") if r["split"] == "test"]
    targets = np.array([CLASSES.index(r["label"]) for r in rows])
    pixels = load_pixels(masked.data_dir(), [r["path"] for r in rows], 32, "bilinear", "test")
    pixels = np.stack([mask_pixels(p, masked.model_input.mask) for p in pixels])
    right = {
        name: predict_pixels(trained.module, pixels, trained.model_input).argmax(axis=1) == targets
        for name, trained in (("planted", planted), ("masked", masked))
    }
    paired = mcnemar(right["masked"], right["planted"])
    assert right["masked"].mean() > right["planted"].mean() and paired["p_value"] < 0.01, paired


def test_a_model_without_a_shortcut_is_not_flagged(audits):
    result = audits["clean"]
    assert not any(r["depends"] for r in result["regions"]), by_region(result)
    assert result["census"][SHORTCUT]["green_box"] == 0.0
    assert result["verdict"].startswith("**Verdict: no dependence")
    assert "frame and overlays predicts little" in result["verdict"]  # the tissue inside the regions is blanked


def test_compare_puts_a_run_and_its_masked_twin_side_by_side(runs, tmp_path):
    main(["compare", str(runs["planted"]), str(runs["masked"]), "--out", str(tmp_path)])
    assert [r["run"] for r in json.loads((tmp_path / "comparison.json").read_text())["runs"]] == ["planted", "masked"]


def test_regions_parse_mask_and_census(tmp_path):
    assert parse_regions(["bottom-left-box", "mine:0.5,0,1,0.25"]) == {
        "bottom-left-box": REGIONS["bottom-left-box"],
        "mine": ((0.5, 0.0, 1.0, 0.25),),
    }
    with pytest.raises(UserError, match="Unknown region 'nope'"):
        parse_regions(["nope"])
    with pytest.raises(UserError, match="0 <= x0 < x1 <= 1"):
        parse_regions(["bad:0.5,0,0.2,1"])
    pixels = np.full((10, 10, 3), 200, np.uint8)
    pixels[:, :5] = 100
    masked = mask_pixels(pixels, ((0.0, 0.0, 0.5, 1.0),), "mean")
    assert (masked[:, :5] == 200).all() and (mask_pixels(pixels, ((0.0, 0.0, 0.5, 1.0),), "black")[:, :5] == 0).all()
    root = synth(str(tmp_path / "d"), images_per_class=1, seed=0, scale=0.3, classes=CLASSES, shortcut_class=SHORTCUT)
    found = {c: overlay_census(decode_resized(next((root / c).glob("*.jpg")), 64)) for c in CLASSES}
    assert found[SHORTCUT]["green_box"] and not found["normal-cecum"]["green_box"]
    assert all(f["text_top_left"] and not f["black_box"] for f in found.values())


@pytest.mark.parametrize(
    ("ci", "finding"),
    [
        ((0.60, 0.80), "shortcut"),  # above the majority rate (0.34), reaches the network's 0.75
        ((0.45, 0.60), "partial"),  # above the majority rate, below the network
        ((0.25, 0.45), "little"),  # spans the majority rate, below the network
        ((0.20, 0.90), "unknown"),  # too few images: spans both
    ],
)
def test_the_shortcut_baseline_is_judged_by_its_interval(ci, finding):
    baseline = {"accuracy": sum(ci) / 2, "accuracy_ci": ci, "chance": 0.34}
    assert baseline_finding(baseline, network_accuracy=0.75) == finding and finding in BASELINE_FINDINGS
