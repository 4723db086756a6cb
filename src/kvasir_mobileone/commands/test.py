"""`kvasir test`: evaluate a run folder or a lone checkpoint on its split's test images."""

from __future__ import annotations

from kvasir_mobileone.evaluation.testing import test_run
from kvasir_mobileone.models.loading import open_run


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
    return test_run(trained, manifest, out, batch_size, num_workers, accelerator, precision, tta, calibrate)
