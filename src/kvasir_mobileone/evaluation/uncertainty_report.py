"""The test report's "I don't know" section: out-of-distribution figures, risk-coverage curves with AURC and the
abstention threshold's check, the prediction sets' coverage per class, and where the guarantees do not hold."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kvasir_mobileone.answers import Uncertainty
from kvasir_mobileone.evaluation.uncertainty import Outputs, scores_of
from kvasir_mobileone.io import markdown_table, pyplot, save_figure
from kvasir_mobileone.runs import TestReport

plt = pyplot()


def pct(value: float | None) -> str:
    return "—" if value is None or value != value else f"{100 * value:.1f}%"


def auroc_text(auc: float | None, ci) -> str:
    return "—" if auc is None else f"{auc:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def rate_text(r: dict | None) -> str:
    if not r or not r["n"]:
        return "— (no images)"
    return f"{pct(r['rate'])} [{pct(r['ci'][0])}, {pct(r['ci'][1])}] ({r['count']} of {r['n']})"


def plot_risk_coverage(curves: dict, selective: dict, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for name, c in curves.items():
        ax.plot(c["coverage"], c["risk"], label=f"by {name} (AURC {c['aurc']:.4f})")
    if selective["threshold"] is not None and selective["error_answered"]:
        ax.plot(selective["coverage"]["rate"], selective["error_answered"]["rate"], "ko", label="abstention threshold")
        ax.axhline(selective["target_error"], color="grey", ls="--", label=f"target error {selective['target_error']}")
    ax.set_xlabel("coverage: share of test images answered")
    ax.set_ylabel("risk: error among the answered images")
    ax.set_xlim(0, 1)
    ax.set_ylim(bottom=0)
    ax.set_title("Risk-coverage on the test images")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_ood_scores(inside: np.ndarray, foreign: np.ndarray, threshold: float | None, detector: str, path: Path):
    fig, ax = plt.subplots(figsize=(5.5, 4))
    bins = np.histogram_bin_edges(np.r_[inside, foreign], bins=30)
    ax.hist(inside, bins=bins, alpha=0.6, density=True, label=f"test images ({len(inside)})")
    ax.hist(foreign, bins=bins, alpha=0.6, density=True, label=f"not endoscopy ({len(foreign)})")
    if threshold is not None:
        ax.axvline(threshold, color="k", ls="--", label="threshold (set on val)")
    ax.set_xlabel(f"out-of-distribution score ({detector}; higher = less like training)")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def uncertainty_section(
    measured: dict, uncertainty: Uncertainty, test: Outputs, foreign: Outputs, out_dir: Path
) -> str:
    """The test report's "I don't know" section and its two figures: the detector, abstention, prediction sets."""
    files = TestReport(out_dir)
    plot_risk_coverage(measured["curves"], measured["selective"], files.risk_coverage_png)
    paired = uncertainty.input_check and uncertainty.ood_threshold is not None
    only_input = uncertainty.detector == "input"
    plot_ood_scores(
        scores_of(uncertainty, test),
        scores_of(uncertainty, foreign),
        1.0 if paired else (uncertainty.input_threshold if only_input else uncertainty.ood_threshold),
        measured["ood"]["detector"] + (": the larger odds of the two, 1 at each threshold" if paired else ""),
        files.ood_scores_png,
    )
    detectors, aurc, per_class = uncertainty_tables(measured, uncertainty)
    return (
        "\n## I don't know: out-of-distribution, abstention, prediction sets\n\n"
        f"Every answer below reads {uncertainty.fitted['probabilities']}; `kvasir predict`, the page and the bundle "
        "apply the same rules (answers.py).\n\n"
        + detector_text(measured["ood"], uncertainty, detectors)
        + abstention_text(measured["selective"], uncertainty, aurc)
        + prediction_sets_text(measured["conformal"], uncertainty, per_class)
    )


def uncertainty_tables(measured: dict, uncertainty: Uncertainty) -> tuple[str, str, str]:
    """The section's three tables: every detector side by side, the AURC of each ranking, coverage per class."""
    found = measured["ood"]["detectors"]
    near = any("near_auroc" in d for d in found.values())
    detectors = markdown_table(
        ["detector", "AUROC [95% CI], test vs not endoscopy"]
        + (["AUROC [95% CI], test vs classes not trained (near)"] if near else [])
        + ["test images flagged (false alarms)", "not-endoscopy images flagged"]
        + (["near images flagged"] if near else []),
        [
            [f"**{name}**" if name == measured["ood"]["detector"] else name, auroc_text(d["auroc"], d["auroc_ci"])]
            + ([auroc_text(d.get("near_auroc"), d.get("near_auroc_ci"))] if near else [])
            + [rate_text(d["false_alarm"]), rate_text(d["foreign_flagged"])]
            + ([rate_text(d.get("near_flagged"))] if near else [])
            for name, d in found.items()
        ],
    )
    aurc = markdown_table(
        ["ranked by", "AURC (lower is better)"], [[k, f"{v:.4f}"] for k, v in measured["selective"]["aurc"].items()]
    )
    per_class = markdown_table(
        ["class", "test images", "coverage [95% CI]", "mean set size"],
        [[c, r["n"], rate_text(r), f"{r['mean_size']:.2f}"] for c, r in measured["conformal"]["per_class"].items()],
    )
    return detectors, aurc, per_class


def detector_text(ood: dict, uncertainty: Uncertainty, detectors: str) -> str:
    """Outside the training data: the detector (and the input check), its threshold, the test split's false-alarm
    rate beside the stated one, every detector side by side (`detectors`)."""
    fitted = uncertainty.fitted
    groups = fitted.get("val_groups", fitted["val_images"])
    units = f"{fitted['val_images']} val images" + (
        f" in {groups} near-duplicate groups (the groups are the units)" if groups < fitted["val_images"] else ""
    )
    paired = fitted.get("input_check") and uncertainty.detector != "input"
    stated = pct(uncertainty.false_alarm)
    set_any = uncertainty.ood_threshold is not None or uncertainty.input_threshold is not None
    threshold_note = (
        f"set on {units} so that at most {stated} of images like them are flagged (a conformal quantile"
        + (f"; {pct(fitted['rate_each'])} each for the detector and the input check" if paired else "")
        + ")"
        if set_any
        else f"**not set**: {units} are too few for a {stated} false-alarm rate (nothing is flagged)"
    )
    alarm = ood["false_alarm"]
    return (
        f"### Outside the training data\n\nDetector **{ood['detector']}**: "
        + (
            f"{uncertainty.detector} on the pooled features of {fitted['train_images']} training images"
            + (f" (k = {uncertainty.k})" if uncertainty.detector == "knn" else "")
            if uncertainty.detector != "input"
            else ""
        )
        + (" and " if paired else "")
        + (
            "the input check (each image's colour and texture statistics against the training images': it does not "
            "depend on what the classes taught the network)"
            if fitted.get("input_check")
            else ""
        )
        + (
            f"; the network detector chosen by `--uncertainty.detector auto` for the highest AUROC of the val images "
            f"against {fitted['selection_images']} images that are not endoscopy (the selection set: matplotlib's "
            "photos, an MRI slice, charts, stained cells, Gaussian noise, gradients — none of the report's sources: "
            + ", ".join(f"{k} {v:.3f}" for k, v in fitted["selection_auroc"].items())
            + ")"
            if fitted.get("chosen") == "auto" and fitted.get("selection_auroc")
            else ""
        )
        + f"; threshold {threshold_note}. **False alarms on the test split: {rate_text(alarm)}**"
        + (f" over {alarm['groups']} groups" if alarm.get("groups") else "")
        + f" against the stated {stated}. Measured on the {alarm['n']} test images and "
        f"{ood['foreign_flagged']['n']} images that are not endoscopy (the report's set: scikit-learn's two photos "
        "whole and cropped, flat frames, noise, gradients, text, a screen, a terrain in grey; data/foreign.py), "
        "every detector side by side (each alone at the stated rate; the pair as fitted):\n\n"
        + detectors
        + "\n![out-of-distribution scores](ood_scores.png)\n\n"
    )


def abstention_text(sel: dict, uncertainty: Uncertainty, aurc: str) -> str:
    """Abstention: the confidence threshold chosen on val, its bound, what it gives on test; the AURC table."""
    fitted = uncertainty.fitted
    val = sel["val"]
    abstain = (
        f'The model answers "not sure" below a top-class probability of {sel["threshold"]:.4f}, chosen on '
        f"{val['val_images']} val images as the lowest threshold whose {pct(fitted['confidence'])} binomial upper "
        f"bound on the error among the answered is at most {pct(sel['target_error'])} (Geifman and El-Yaniv 2017; "
        f"on val: {pct(val['val_coverage'])} answered, error {pct(val['val_error'])}, bound "
        f"{pct(val['val_error_bound'])}). On the test images: {rate_text(sel['coverage'])} answered, error among "
        f"them {rate_text(sel['error_answered'])}.\n"
        if sel["threshold"] is not None
        else f"No threshold reaches a {pct(sel['target_error'])} error bound on the {val['val_images']} val images: "
        "the model never abstains by confidence (a larger val split, or a higher --uncertainty.target_error).\n"
    )
    return (
        "### Abstention (selective prediction)\n\n"
        + abstain
        + "\n"
        + aurc
        + "\n![risk-coverage](risk_coverage.png)\n\n"
    )


def prediction_sets_text(conf: dict, uncertainty: Uncertainty, per_class: str) -> str:
    """Prediction sets: their calibration, coverage and sizes on test, per class, and what they do not promise."""
    fitted = uncertainty.fitted
    sizes = ", ".join(f"{n} image{'s' if n != 1 else ''} of {s}" for s, n in conf["size_counts"].items())
    sets_note = (
        f"calibrated on {fitted['val_images']} val images (APS score quantile {conf['qhat']:.4f})"
        if conf["qhat"] is not None
        else f"**not calibrated**: {fitted['val_images']} val images are too few for {pct(conf['coverage_target'])} "
        "coverage, so every set holds every class"
    )
    return (
        f"### Prediction sets at {pct(conf['coverage_target'])} coverage\n\nSplit-conformal adaptive prediction "
        f"sets (APS, Romano et al. 2020), {sets_note}. On the test images: coverage {rate_text(conf['coverage'])}, "
        f"mean set size {conf['mean_size']:.2f} ({sizes}).\n\n"
        + per_class
        + "\nThe guarantee is on average over images like the val split (exchangeable with it): per class it is not "
        "guaranteed (the table shows each), and it does **not** hold for another hospital, another endoscope or "
        "processor, another patient population or a changed protocol — calibrate again on val images from there. "
        "The false-alarm rate holds likewise only for images like the val split; what the detector flags outside "
        "it is measured above, not guaranteed.\n"
    )
