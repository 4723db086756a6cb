"""Predictions -> metrics, per-class report, confusion matrices and report.md; and the `kvasir test` command."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torchmetrics.functional.classification as tmf  # noqa: E402
from sklearn.metrics import ConfusionMatrixDisplay  # noqa: E402

from kvasir_mobileone.io import atomic_path, markdown_table, write_csv, write_json, write_text  # noqa: E402
from kvasir_mobileone.stats import apply_temperature, expected_calibration_error, fit_temperature  # noqa: E402

TOP_KS = (3, 5)
TEMPERATURE_NAME = "temperature.json"


def compute_metrics(probs: np.ndarray, targets: np.ndarray, class_names: list[str]) -> dict:
    """Loss, accuracy, top-k, macro/micro F1, MCC, per-class precision/recall/F1 and the confusion matrix."""
    p, t = torch.as_tensor(probs, dtype=torch.float64), torch.as_tensor(targets, dtype=torch.long)
    n = len(class_names)
    metrics = {
        "n": len(t),
        "loss": float(-torch.log(p[torch.arange(len(t)), t].clamp_min(1e-12)).mean()),
        "accuracy": float(tmf.multiclass_accuracy(p, t, n, average="micro")),
    }
    for k in TOP_KS:
        # top-k with k >= number of classes is 1 by definition; report it only when it says something
        metrics[f"top{k}"] = float(tmf.multiclass_accuracy(p, t, n, top_k=k, average="micro")) if k < n else None
    metrics |= {
        "f1_macro": float(tmf.multiclass_f1_score(p, t, n, average="macro")),
        "f1_micro": float(tmf.multiclass_f1_score(p, t, n, average="micro")),
        "mcc": float(tmf.multiclass_matthews_corrcoef(p, t, n)),
        "per_class": {
            name: {"precision": float(pr), "recall": float(rc), "f1": float(f1), "support": int(s)}
            for name, pr, rc, f1, s in zip(
                class_names,
                tmf.multiclass_precision(p, t, n, average=None),
                tmf.multiclass_recall(p, t, n, average=None),
                tmf.multiclass_f1_score(p, t, n, average=None),
                torch.bincount(t, minlength=n),
                strict=True,
            )
        },
        "confusion_matrix": tmf.multiclass_confusion_matrix(p, t, n).tolist(),
    }
    calibration = expected_calibration_error(np.asarray(probs, dtype=np.float64), np.asarray(targets))
    metrics |= {"ece": calibration["ece"], "calibration_bins": calibration["bins"]}
    return metrics


def plot_reliability(bins: list[dict], ece: float, path: Path) -> Path:
    """Accuracy against confidence per bin; the diagonal is perfect calibration."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    centres = [(b["low"] + b["high"]) / 2 for b in bins]
    width = bins[0]["high"] - bins[0]["low"] if bins else 0.1
    ax.bar(centres, [b["accuracy"] for b in bins], width=width * 0.9, color="tab:blue", label="accuracy in bin")
    ax.plot([0, 1], [0, 1], "k--", label="perfect calibration")
    ax.plot(centres, [b["confidence"] for b in bins], "o", color="tab:red", label="mean confidence in bin")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence of the top-1 class (probability)")
    ax.set_ylabel("accuracy (fraction correct)")
    ax.set_title(f"Reliability diagram, ECE = {ece:.4f}")
    ax.legend(loc="upper left")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def plot_confusion_matrix(matrix: np.ndarray, class_names: list[str], path: Path, normalize: bool) -> Path:
    """Counts, or rates normalized over each true class (rows)."""
    matrix = np.asarray(matrix, dtype=float)
    values = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1) if normalize else matrix.astype(int)
    fig, ax = plt.subplots(figsize=(1.0 * len(class_names) + 3, 0.9 * len(class_names) + 2.5))
    ConfusionMatrixDisplay(values, display_labels=class_names).plot(
        ax=ax, cmap="Blues", xticks_rotation=45, values_format=".2f" if normalize else "d", colorbar=True
    )
    ax.set_title("Confusion matrix, " + ("rate per true class" if normalize else "image counts"))
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return path


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.3f}%"


def write_report(
    out_dir: Path,
    metrics: dict,
    class_names: list[str],
    model_name: str,
    probs: np.ndarray,
    targets: np.ndarray,
    paths: list[str],
    extra_sections: str = "",
) -> Path:
    """metrics.json, per-class CSV/markdown, confusion matrices (PNG, CSV), reliability diagram, predictions.csv and
    report.md."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "metrics.json", {"model": model_name, "class_names": class_names, **metrics})
    per_class_rows = [[c, v["precision"], v["recall"], v["f1"], v["support"]] for c, v in metrics["per_class"].items()]
    header = ["class", "precision", "recall", "f1", "support"]
    write_csv(out_dir / "per_class.csv", header, per_class_rows)
    per_class_md = markdown_table(header, per_class_rows)
    write_text(out_dir / "per_class.md", per_class_md)
    matrix = np.array(metrics["confusion_matrix"])
    write_csv(
        out_dir / "confusion_matrix.csv",
        ["true \\ predicted", *class_names],
        [[c, *row] for c, row in zip(class_names, matrix.tolist(), strict=True)],
    )
    plot_confusion_matrix(matrix, class_names, out_dir / "confusion_matrix.png", normalize=False)
    plot_confusion_matrix(matrix, class_names, out_dir / "confusion_matrix_normalized.png", normalize=True)
    plot_reliability(metrics["calibration_bins"], metrics["ece"], out_dir / "reliability.png")
    predicted = probs.argmax(axis=1)
    write_csv(
        out_dir / "predictions.csv",
        ["path", "label", "predicted", *[f"p_{c}" for c in class_names]],
        [
            [p, class_names[t], class_names[y], *np.round(pr, 6)]
            for p, t, y, pr in zip(paths, targets, predicted, probs, strict=True)
        ],
    )
    summary = markdown_table(
        ["model", "Accuracy", "Top-3", "Top-5", "F1", "macro-F1", "MCC", "ECE", "test images"],
        [
            [
                model_name,
                _pct(metrics["accuracy"]),
                _pct(metrics["top3"]),
                _pct(metrics["top5"]),
                f"{metrics['f1_micro']:.4f}",
                f"{metrics['f1_macro']:.4f}",
                f"{metrics['mcc']:.4f}",
                f"{metrics['ece']:.4f}",
                metrics["n"],
            ]
        ],
    )
    report = (
        f"# Test report: {model_name}\n\n{summary}\n"
        "F1 is torchmetrics' default (micro) F1 as in the original table; for single-label classification it equals "
        "accuracy. macro-F1 weights every class equally. Top-k is shown as — when k is not below the number of "
        "classes.\n\n## Per class\n\n"
        + per_class_md
        + "\n## Confusion matrix\n\n![counts](confusion_matrix.png)\n\n![rates](confusion_matrix_normalized.png)\n"
        + f"\n## Calibration\n\nExpected calibration error (15 bins): {metrics['ece']:.4f}.\n\n"
        "![reliability](reliability.png)\n" + extra_sections
    )
    return write_text(out_dir / "report.md", report)


def resolve_run(run_or_ckpt: str | Path) -> tuple[Path, Path | None]:
    """(checkpoint, run folder or None) for a run folder or a checkpoint path."""
    target = Path(run_or_ckpt)
    if target.is_dir():
        ckpt = target / "checkpoints" / "best.ckpt"
        if not ckpt.is_file():
            ckpt = target / "checkpoints" / "last.ckpt"
        if not ckpt.is_file():
            raise FileNotFoundError(f"No checkpoints/best.ckpt or last.ckpt in {target}; is it a run folder?")
        return ckpt, target
    if not target.is_file():
        raise FileNotFoundError(f"{target} is neither a run folder nor a checkpoint file.")
    run_dir = target.parent.parent
    return target, run_dir if (run_dir / "config.yaml").is_file() else None


@dataclass
class TrainedRun:
    """A checkpoint with what it needs to run: the run's data settings, the model, its input normalization and
    the fitted temperature. Every command that starts from a run folder or checkpoint opens it through open_run."""

    ckpt: Path
    run_dir: Path | None
    data: Any  # DataConfig: the run's, or the defaults for a bare checkpoint
    module: Any  # MobileOneClassifier, in eval mode
    norm: Any  # Normalization from timm's data config at the run's image size
    temperature: float | None


def open_run(run: str | Path) -> TrainedRun:
    from kvasir_mobileone.data import DataConfig
    from kvasir_mobileone.model import MobileOneClassifier, normalization_of
    from kvasir_mobileone.train import load_run_config

    ckpt, run_dir = resolve_run(run)
    data = DataConfig(**load_run_config(run_dir)["data"]) if run_dir else DataConfig()
    module = MobileOneClassifier.from_checkpoint(ckpt)
    temperature_path = run_dir / TEMPERATURE_NAME if run_dir else None
    temperature = (
        json.loads(temperature_path.read_text())["temperature"]
        if temperature_path and temperature_path.is_file()
        else None
    )
    return TrainedRun(ckpt, run_dir, data, module, normalization_of(module.backbone, data.image_size), temperature)


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

    --tta true averages in the horizontally flipped image; --calibrate true fits a softmax temperature on the val
    split, saves it as RUN/temperature.json (export and predict use it) and reports calibration before and after."""
    from kvasir_mobileone.data import DataError, ImageFolderDataModule, check_manifest_files, read_manifest
    from kvasir_mobileone.train import MANIFEST_NAME, TrainerConfig, build_trainer

    trained = open_run(run)
    ckpt, run_dir, module = trained.ckpt, trained.run_dir, trained.module
    manifest = manifest or (run_dir and str(run_dir / MANIFEST_NAME))
    if not manifest:
        raise DataError(f"{ckpt} is not inside a run folder: pass --manifest with the split to test on.")
    data_cfg = dataclasses.replace(
        trained.data,
        data_dir=data_dir or trained.data.data_dir,
        batch_size=batch_size or trained.data.batch_size,
        num_workers=num_workers if num_workers is not None else trained.data.num_workers,
    )
    rows = read_manifest(manifest)
    check_manifest_files(rows, data_cfg.data_dir, manifest)

    datamodule = ImageFolderDataModule(data_cfg, rows, trained.norm)
    if datamodule.class_names != module.class_names:
        raise DataError(
            f"The checkpoint {ckpt} predicts classes {module.class_names} but the manifest {manifest} holds "
            f"{datamodule.class_names}. Test on the dataset the model was trained for."
        )
    out_dir = Path(out) if out else (run_dir or ckpt.parent) / "test"
    module.tta = tta
    # one device: every test image is seen exactly once and one process writes the report
    trainer = build_trainer(
        TrainerConfig(accelerator=accelerator, devices=1, precision=precision, logger="none"), out_dir
    )
    temperature = None
    if calibrate:
        # the val images, served through the test loader, give the probabilities the temperature is fitted on
        val_as_test = [r | {"split": "test"} for r in rows if r["split"] == "val"]
        trainer.test(module, datamodule=ImageFolderDataModule(data_cfg, val_as_test, datamodule.norm), verbose=False)
        val = module.test_predictions
        temperature = fit_temperature(val.get("probs_tta", val["probs"]), val["targets"])
        fitted = {"temperature": temperature, "fitted_on": "val", "images": len(val["targets"]), "tta": tta}
        write_json((run_dir or ckpt.parent) / TEMPERATURE_NAME, fitted)
    trainer.test(module, datamodule=datamodule, verbose=False)
    return report_test_predictions(module, rows, out_dir, temperature)


def report_test_predictions(
    module, rows: list[dict[str, str]], out_dir: Path, temperature: float | None = None
) -> dict:
    """After trainer.test: metrics and the report of the module's gathered test predictions, written to out_dir.

    With TTA or a temperature, the report's main numbers use them and a section shows their effect."""
    predictions = module.test_predictions
    test_paths = [r["path"] for r in rows if r["split"] == "test"]
    paths = [test_paths[i] for i in predictions["index"]]
    targets, names = predictions["targets"], module.class_names
    variants = {"plain": predictions["probs"]}
    if "probs_tta" in predictions:
        variants["flip TTA"] = predictions["probs_tta"]
    if temperature is not None:
        variants[f"{list(variants)[-1]} + temperature {temperature:.3f}"] = apply_temperature(
            variants[list(variants)[-1]], temperature
        )
    probs = variants[list(variants)[-1]]
    metrics = compute_metrics(probs, targets, names)
    extra = ""
    if len(variants) > 1:
        effects = {name: compute_metrics(p, targets, names) for name, p in variants.items()}
        metrics["variants"] = {
            k: {m: v[m] for m in ("accuracy", "f1_macro", "loss", "ece")} for k, v in effects.items()
        }
        metrics["temperature"] = temperature
        extra = "\n## Test-time augmentation and calibration\n\n" + markdown_table(
            ["probabilities", "Accuracy", "macro-F1", "NLL", "ECE"],
            [[k, _pct(v["accuracy"]), f"{v['f1_macro']:.4f}", f"{v['loss']:.4f}", f"{v['ece']:.4f}"]
             for k, v in effects.items()],
        ) + "The main numbers above use the last row. A temperature never changes the predicted class.\n"  # fmt: skip
    report = write_report(out_dir, metrics, names, module.cfg.name, probs, targets, paths, extra)
    print(
        f"Test on {metrics['n']} images: accuracy {_pct(metrics['accuracy'])}, macro-F1 {metrics['f1_macro']:.4f}, "
        f"ECE {metrics['ece']:.4f}. Report: {report}"
    )
    return metrics
