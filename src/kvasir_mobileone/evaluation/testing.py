"""`kvasir test`: a trained model on its split's test images (at the run's evaluation precision), optional flip TTA
and temperature, and the report. The test at the end of `fit` ends in the same report_test_predictions."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kvasir_mobileone.data.datamodule import ImageFolderDataModule
from kvasir_mobileone.data.split import GROUP, leak_free_test
from kvasir_mobileone.evaluation.metrics import compute_metrics
from kvasir_mobileone.evaluation.outputs import as_outputs, foreign_outputs, groups_of, run_test
from kvasir_mobileone.evaluation.report import accuracy_text, evaluate, f1_text, percent, write_report
from kvasir_mobileone.evaluation.stats import apply_temperature, fit_temperature
from kvasir_mobileone.evaluation.uncertainty import measure
from kvasir_mobileone.evaluation.uncertainty_report import uncertainty_section
from kvasir_mobileone.io import markdown_table, pyplot, save_figure
from kvasir_mobileone.models.classifier import TestOutputs
from kvasir_mobileone.runs import TestReport

plt = pyplot()


def val_temperature(trainer, module, data, rows, tta: bool) -> tuple[float, dict]:
    """(the softmax temperature fitted on the val images' probabilities — with flip TTA when asked —, what
    temperature.json records of it)."""
    val_rows = [r for r in rows if r["split"] == "val"]
    datamodule = ImageFolderDataModule(
        data, val_rows, module.model_input, evaluate="val", class_names=module.class_names
    )
    val = run_test(trainer, module, datamodule)
    temperature = fit_temperature(val.probs_tta if tta else val.probs, val.targets)
    return temperature, {"temperature": temperature, "fitted_on": "val", "images": len(val.targets), "tta": tta}


def leak_free_metrics(
    rows: list[dict[str, str]],
    paths: list[str],
    probs: np.ndarray,
    targets: np.ndarray,
    names: list[str],
    metrics: dict,
) -> tuple[dict | None, str]:
    """(metrics with intervals on the test images that have no near-duplicate in train or val, the report's section
    beside `metrics` of all test images). None when the manifest records no near-duplicate groups."""
    heading = "\n## Leak-free test images\n\n"
    if not any(r.get(GROUP, "") != "" for r in rows):
        return None, heading + (
            "This split manifest records no near-duplicate groups (it was made by an older version): refit with it "
            "as --data.manifest to have it checked.\n"
        )
    clean = leak_free_test(rows)
    keep = np.array([p in clean for p in paths], dtype=bool)
    if keep.all():
        return {"n": len(paths), "same_as_all": True}, heading + (
            f"All {len(paths)} test images are leak-free: none has a near-duplicate (perceptual hash) in train or "
            "val, so the numbers above are the leak-free ones.\n"
        )
    if keep.sum() < 2:  # no interval from fewer than 2 images
        clean = int(keep.sum())
        return {"n": clean}, heading + (
            f"{len(paths) - clean} of the {len(paths)} test images have a near-duplicate in train or val: "
            f"{clean} leak-free test image{'' if clean == 1 else 's'}, too few for figures.\n"
        )
    subset = evaluate(probs[keep], targets[keep], names)
    table = markdown_table(
        ["test images", "n", "Accuracy [95% CI]", "macro-F1 [95% CI]"],
        [
            [what, m["n"], accuracy_text(m), f1_text(m)]
            for what, m in (("all", metrics), ("leak-free: no near-duplicate in train/val", subset))
        ],
    )
    leaky = len(paths) - int(keep.sum())
    section = heading + (
        f"{leaky} of the {len(paths)} test images have a near-duplicate (perceptual hash) in train or val "
        f"(listed in the run's split_leaks.csv), so the split leaks: a model can score on them by memory. "
        "Publish both rows.\n\n" + table
    )
    return {k: subset[k] for k in ("n", "accuracy", "accuracy_ci", "f1_macro", "f1_macro_ci", "mcc")}, section


def report_test_predictions(
    module,
    tested: TestOutputs,
    rows: list[dict[str, str]],
    out_dir: Path,
    temperature: float | None = None,
    precision: str = "32-true",
    excluded: int = 0,
) -> dict:
    """Metrics and the report of a test epoch's outputs (`tested`, evaluation/outputs.run_test), written to out_dir.

    With TTA or a temperature, the report's main numbers use them and a section shows their effect."""
    test_paths = [r["path"] for r in rows if r["split"] == "test"]
    if len(tested.index) != len(test_paths):  # never a report whose n is not the split's
        raise RuntimeError(f"{len(tested.index)} test predictions for {len(test_paths)} test images.")
    paths = [test_paths[i] for i in tested.index]
    targets, names = tested.targets, module.class_names
    variants = {"plain": tested.probs}
    if tested.probs_tta is not None:
        variants["flip TTA"] = tested.probs_tta
    if temperature is not None:
        last = list(variants)[-1]
        variants[f"{last} + temperature {temperature:.3f}"] = apply_temperature(variants[last], temperature)
    probs = variants[list(variants)[-1]]
    metrics = evaluate(probs, targets, names) | {"eval_precision": precision, "excluded": excluded}
    metrics["leak_free"], extra = leak_free_metrics(rows, paths, np.asarray(probs), np.asarray(targets), names, metrics)
    if len(variants) > 1:
        effects = {name: compute_metrics(p, targets, names) for name, p in variants.items()}  # no intervals needed
        metrics["variants"] = {
            k: {m: v[m] for m in ("accuracy", "f1_macro", "loss", "ece")} for k, v in effects.items()
        }
        metrics["temperature"] = temperature
        extra += (
            "\n## Test-time augmentation and calibration\n\n"
            + markdown_table(
                ["probabilities", "Accuracy", "macro-F1", "NLL", "ECE"],
                [
                    [k, percent(v["accuracy"]), f"{v['f1_macro']:.4f}", f"{v['loss']:.4f}", f"{v['ece']:.4f}"]
                    for k, v in effects.items()
                ],
            )
            + "The main numbers above use the last row. A temperature never changes the predicted class.\n"
        )
    if excluded:
        extra += (
            f"\n## Excluded images\n\n{excluded} images were left out of every split by `--data.exclude` (listed in "
            "the run's excluded.csv): these figures are on the remaining images.\n"
        )
    extra += model_input_section(module.model_input, out_dir)
    if module.uncertainty is not None:
        test_rows = [r for r in rows if r["split"] == "test"]
        test, foreign = as_outputs(tested, groups_of(test_rows)[tested.index]), foreign_outputs(module)
        measured = measure(module.uncertainty, test, foreign, names)
        extra += uncertainty_section(measured, module.uncertainty, test, foreign, out_dir)
        metrics["uncertainty"] = {k: v for k, v in measured.items() if k != "curves"}
    metrics["report"] = str(
        write_report(out_dir, metrics, names, module.model_config.name, np.asarray(probs), targets, paths, extra)
    )
    return metrics


def model_input_section(model_input, out_dir: Path) -> str:
    """A report section with a figure of what the model sees, when it was trained with parts of the input hidden
    (--data.mask_regions, --data.field_of_view); "" otherwise."""
    hidden = model_input.hidden()
    if hidden is None:
        return ""
    fig, ax = plt.subplots(figsize=(3.4, 3.6))
    ax.imshow(~hidden, cmap="gray", vmin=0, vmax=1)
    ax.set_title(
        f"What the model sees (white)\n{model_input.image_size} x {model_input.image_size} px input", fontsize=9
    )
    ax.set_xlabel("x (pixels)")
    ax.set_ylabel("y (pixels)")
    save_figure(fig, TestReport(out_dir).model_input_png)
    view = model_input.view_sha256
    return (
        f"\n## What the model sees\n\nEvery image (training, evaluation, export, predict) has "
        f"{100 * hidden.mean():.1f}% of its {model_input.image_size} x {model_input.image_size} input blacked out"
        + (f": the mask boxes {[list(b) for b in model_input.mask]}" if model_input.mask else "")
        + (
            f"{' and' if model_input.mask else ':'} everything outside the field of view (SHA-256 {view[:16]}…)"
            if view
            else ""
        )
        + ".\n\n![what the model sees](model_input.png)\n"
    )


def test_summary(metrics: dict) -> str:
    """The lines `fit` and `test` print after a test: the figures on all test images and, when the split leaks,
    on the leak-free ones."""
    lines = [
        f"Test on {metrics['n']} images ({metrics['eval_precision']}): accuracy {percent(metrics['accuracy'])} "
        f"[95% CI {percent(metrics['accuracy_ci'][0])}, {percent(metrics['accuracy_ci'][1])}], "
        f"macro-F1 {metrics['f1_macro']:.4f}, ECE {metrics['ece']:.4f}. Report: {metrics['report']}"
    ]
    clean = metrics["leak_free"]
    if clean and clean["n"] < metrics["n"]:
        lines.append(
            f"Leak-free test images only ({clean['n']} of {metrics['n']}, no near-copy in train/val): accuracy "
            f"{accuracy_text(clean) if clean['n'] else '—'}, macro-F1 {clean.get('f1_macro', float('nan')):.4f}."
        )
    return "\n".join(lines)
