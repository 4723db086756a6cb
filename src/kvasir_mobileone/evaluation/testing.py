"""`kvasir test`: a trained model on its split's test images (at the run's evaluation precision), optional flip TTA
and temperature, and the report. The test at the end of `fit` ends in the same report_test_predictions."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from kvasir_mobileone.data.dataset import ImageFolderDataModule
from kvasir_mobileone.data.folder import DataError
from kvasir_mobileone.data.split import GROUP, leak_free_test
from kvasir_mobileone.evaluation.metrics import compute_metrics
from kvasir_mobileone.evaluation.report import accuracy_text, evaluate, f1_text, percent, write_report
from kvasir_mobileone.evaluation.stats import apply_temperature, fit_temperature
from kvasir_mobileone.io import markdown_table, write_json
from kvasir_mobileone.models.loading import TrainedRun, open_run
from kvasir_mobileone.models.trainer import TrainerConfig, build_trainer, evaluation_precision


def eval_trainer_config(trained: TrainedRun, accelerator: str = "auto", precision: str | None = None):
    """One device (every test image seen once, one process writes the report) at the run's evaluation precision,
    or at `precision` when one is given."""
    run_trainer = {k: v for k, v in trained.config.get("trainer", {}).items() if k in ("precision", "eval_precision")}
    recorded = TrainerConfig(**run_trainer, accelerator=accelerator)
    if precision:  # asked for explicitly: the module then leaves the trainer's autocast on
        trained.module.eval_precision = "32-true" if precision == "32-true" else "as-training"
    else:
        trained.module.eval_precision = recorded.eval_precision
        precision = evaluation_precision(recorded)
    return TrainerConfig(accelerator=accelerator, devices=1, logger="none", precision=precision)


def test(
    run: str,
    manifest: str | None = None,
    data_dir: str | None = None,
    out: str | None = None,
    batch_size: int | None = None,
    num_workers: int | None = None,
    accelerator: str = "auto",
    precision: str | None = None,
    tta: bool = False,
    calibrate: bool = False,
) -> dict:
    """Evaluate a run folder or checkpoint on its split manifest's test images; writes RUN/test/report.md.

    Runs at the run's evaluation precision (32-true unless the run says otherwise; --precision overrides), so it
    reproduces the test at the end of `fit` exactly. A lone checkpoint needs --manifest; --data_dir points to the
    images when the recorded data folder has moved. --tta true averages in the horizontally flipped image;
    --calibrate true fits a softmax temperature on the val split, saves it as RUN/temperature.json (export and
    predict use it) and reports calibration before and after."""
    trained = open_run(run, data_dir)
    rows, manifest_path = trained.manifest_rows(manifest)
    module = trained.module
    data_cfg = dataclasses.replace(
        trained.data,
        data_dir=str(trained.data_dir()),
        batch_size=batch_size or trained.data.batch_size,
        num_workers=num_workers if num_workers is not None else trained.data.num_workers,
    )
    datamodule = ImageFolderDataModule(data_cfg, rows, trained.norm)
    if datamodule.class_names != module.class_names:
        raise DataError(
            f"The checkpoint {trained.ckpt} predicts classes {module.class_names} but the manifest {manifest_path} "
            f"holds {datamodule.class_names}. Test on the dataset the model was trained for."
        )
    home = trained.run.root if trained.run else trained.ckpt.parent
    out_dir = Path(out) if out else home / "test"
    module.tta = tta
    config = eval_trainer_config(trained, accelerator, precision)
    trainer = build_trainer(config, out_dir)
    temperature = None
    if calibrate:
        # the val images, served through the test loader, give the probabilities the temperature is fitted on
        val_as_test = [r | {"split": "test"} for r in rows if r["split"] == "val"]
        trainer.test(module, datamodule=ImageFolderDataModule(data_cfg, val_as_test, trained.norm), verbose=False)
        val = module.test_predictions
        temperature = fit_temperature(val.get("probs_tta", val["probs"]), val["targets"])
        fitted = {"temperature": temperature, "fitted_on": "val", "images": len(val["targets"]), "tta": tta}
        if trained.run:
            write_json(trained.run.temperature, fitted)
    trainer.test(module, datamodule=datamodule, verbose=False)
    return report_test_predictions(module, rows, out_dir, temperature, config.precision)


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
    if not keep.any():
        return {"n": 0}, heading + "None: every test image has a near-duplicate in train or val.\n"
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
    module, rows: list[dict[str, str]], out_dir: Path, temperature: float | None = None, precision: str = "32-true"
) -> dict:
    """After trainer.test: metrics and the report of the module's gathered test predictions, written to out_dir.

    With TTA or a temperature, the report's main numbers use them and a section shows their effect."""
    predictions = module.test_predictions
    test_paths = [r["path"] for r in rows if r["split"] == "test"]
    if len(predictions["index"]) != len(test_paths):  # never a report whose n is not the split's
        raise RuntimeError(f"{len(predictions['index'])} test predictions for {len(test_paths)} test images.")
    paths = [test_paths[i] for i in predictions["index"]]
    targets, names = predictions["targets"], module.class_names
    variants = {"plain": predictions["probs"]}
    if "probs_tta" in predictions:
        variants["flip TTA"] = predictions["probs_tta"]
    if temperature is not None:
        last = list(variants)[-1]
        variants[f"{last} + temperature {temperature:.3f}"] = apply_temperature(variants[last], temperature)
    probs = variants[list(variants)[-1]]
    metrics = evaluate(probs, targets, names) | {"eval_precision": precision}
    metrics["leak_free"], extra = leak_free_metrics(rows, paths, np.asarray(probs), np.asarray(targets), names, metrics)
    if len(variants) > 1:
        effects = {name: compute_metrics(p, targets, names) for name, p in variants.items()}  # no intervals needed
        metrics["variants"] = {
            k: {m: v[m] for m in ("accuracy", "f1_macro", "loss", "ece")} for k, v in effects.items()
        }
        metrics["temperature"] = temperature
        extra += "\n## Test-time augmentation and calibration\n\n" + markdown_table(
            ["probabilities", "Accuracy", "macro-F1", "NLL", "ECE"],
            [[k, percent(v["accuracy"]), f"{v['f1_macro']:.4f}", f"{v['loss']:.4f}", f"{v['ece']:.4f}"]
             for k, v in effects.items()],
        ) + "The main numbers above use the last row. A temperature never changes the predicted class.\n"  # fmt: skip
    report = write_report(out_dir, metrics, names, module.cfg.name, np.asarray(probs), targets, paths, extra)
    lo, hi = metrics["accuracy_ci"]
    clean = metrics["leak_free"]
    if clean and clean["n"] < metrics["n"]:
        print(
            f"Leak-free test images only ({clean['n']} of {metrics['n']}, no near-copy in train/val): accuracy "
            f"{percent(clean['accuracy'])} [95% CI {percent(clean['accuracy_ci'][0])}, "
            f"{percent(clean['accuracy_ci'][1])}], macro-F1 {clean['f1_macro']:.4f}."
        )
    print(
        f"Test on {metrics['n']} images ({precision}): accuracy {percent(metrics['accuracy'])} [95% CI {percent(lo)}, "
        f"{percent(hi)}], macro-F1 {metrics['f1_macro']:.4f}, ECE {metrics['ece']:.4f}. Report: {report}"
    )
    return metrics
