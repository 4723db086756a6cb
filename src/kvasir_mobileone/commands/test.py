"""`kvasir test`: a trained model on its split's test images, and the report."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from kvasir_mobileone.answers import UncertaintyConfig
from kvasir_mobileone.data.datamodule import ImageFolderDataModule
from kvasir_mobileone.data.folder import DataError
from kvasir_mobileone.evaluation.outputs import calibrate as calibrate_uncertainty
from kvasir_mobileone.evaluation.outputs import run_test
from kvasir_mobileone.evaluation.testing import (
    report_test_predictions,
    test_summary,
    val_temperature,
)
from kvasir_mobileone.io import read_csv, write_json
from kvasir_mobileone.models.classifier import store_uncertainty
from kvasir_mobileone.models.loading import open_run
from kvasir_mobileone.models.trainer import build_trainer, evaluation_settings


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
    refit_uncertainty: bool = False,
    uncertainty: UncertaintyConfig = UncertaintyConfig(),
) -> dict:
    """Evaluate a run folder or checkpoint on its split manifest's test images; writes RUN/test/report.md.

    Runs at the run's evaluation precision (32-true unless the run says otherwise; --precision overrides), so it
    reproduces the test at the end of `fit` exactly. A lone checkpoint needs --manifest; --data_dir points to the
    images when the recorded data folder has moved. --tta true averages in the horizontally flipped image;
    --calibrate true fits a softmax temperature on the val split, saves it as RUN/temperature.json (export and
    predict use it) and reports calibration before and after. A checkpoint without an out-of-distribution detector
    (trained with --test_after false, or by an older release) gets one fitted with --uncertainty.* and written into
    it; --refit_uncertainty true fits it again."""
    trained = open_run(run, data_dir)
    rows, manifest_path = trained.manifest_rows(manifest)
    module = trained.module
    data = dataclasses.replace(
        trained.data,
        data_dir=str(trained.data_dir()),
        batch_size=batch_size or trained.data.batch_size,
        num_workers=num_workers if num_workers is not None else trained.data.num_workers,
    )
    datamodule = ImageFolderDataModule(data, rows, trained.model_input)
    if datamodule.class_names != module.class_names:
        raise DataError(
            f"The checkpoint {trained.ckpt} predicts classes {module.class_names} but the manifest {manifest_path} "
            f"holds {datamodule.class_names}. Test on the dataset the model was trained for."
        )
    out_dir = Path(out) if out else trained.home.test_dir
    module.tta = tta
    config, module.eval_precision, channels_last = evaluation_settings(trained.trainer_config, accelerator, precision)
    module.accelerate(channels_last=channels_last)
    trainer = build_trainer(config, out_dir)
    temperature = None
    if calibrate:  # the val images' probabilities, through the test step, give the temperature
        temperature, fitted = val_temperature(trainer, module, data, rows, tta)
        if trained.run:
            write_json(trained.run.temperature, fitted)
    tested = run_test(trainer, module, datamodule)
    if refit_uncertainty or module.uncertainty is None:
        skip = (
            [r["path"] for r in read_csv(trained.run.problems)]
            if trained.run and trained.run.problems.is_file()
            else []
        )
        module.uncertainty = calibrate_uncertainty(trainer, module, data, rows, uncertainty, tested, skip)
        store_uncertainty(trained.ckpt, module.uncertainty)
        print(
            "Out-of-distribution detector, abstention threshold and prediction sets fitted; written into "
            f"{trained.ckpt}."
        )
    excluded = trained.run.excluded_count() if trained.run and manifest is None else 0
    metrics = report_test_predictions(module, tested, rows, out_dir, temperature, config.precision, excluded)
    print(test_summary(metrics))
    return metrics
