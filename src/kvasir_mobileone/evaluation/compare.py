"""`kvasir compare`: runs on the same test set side by side, with bootstrap intervals and McNemar's test."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from kvasir_mobileone.errors import UserError
from kvasir_mobileone.evaluation.intervals import metric_intervals
from kvasir_mobileone.evaluation.metrics import TOP1_METRICS, present_classes, top1_metric
from kvasir_mobileone.io import markdown_table, pyplot, save_figure, write_csv, write_json, write_text
from kvasir_mobileone.metrics import BOOTSTRAPPED, METRICS
from kvasir_mobileone.runs import RunFolder, TestReport

plt = pyplot()


class IncomparableRunsError(UserError):
    """The runs were not tested on the same images."""


def load_result(run: str | Path) -> dict:
    """A run's test predictions and metrics: from RUN/test/ (fit, test, cv and features all write it)."""
    folder = Path(run)
    report = RunFolder(folder).test if RunFolder(folder).test.predictions.is_file() else TestReport(folder)
    if not report.predictions.is_file():
        raise UserError(f"{folder} has no test/predictions.csv: run `kvasir test {folder}` first.")
    found = report.read_predictions()
    metrics = json.loads(report.metrics.read_text())
    class_names = metrics["class_names"]
    if found.class_names != class_names:
        raise UserError(f"{report.predictions} predicts {found.class_names}, its metrics.json {class_names}.")
    info_path = RunFolder(folder).model_info  # written by fit and export
    extra = json.loads(info_path.read_text()) if info_path.is_file() else {}
    return {
        "name": folder.name if folder.name != "test" else folder.parent.name,
        "model": metrics.get("model", ""),
        "metrics": metrics,
        "class_names": class_names,
        "paths": found.paths,
        "targets": found.targets,
        "predicted": found.predicted,
        "info": extra,
    }


def same_test_set(results: list[dict]) -> None:
    reference = results[0]
    for other in results[1:]:
        if other["class_names"] != reference["class_names"]:
            raise IncomparableRunsError(
                f"{other['name']} predicts {other['class_names']}, {reference['name']} {reference['class_names']}."
            )
        if sorted(zip(other["paths"], other["targets"], strict=True)) != sorted(
            zip(reference["paths"], reference["targets"], strict=True)
        ):
            only = set(other["paths"]) ^ set(reference["paths"])
            raise IncomparableRunsError(
                f"{reference['name']} and {other['name']} were tested on different images ({len(reference['paths'])} "
                f"vs {len(other['paths'])}; {len(only)} differ, e.g. {sorted(only)[:3]}). Compare runs that share a "
                "split: train with --data.manifest RUN/split_manifest.csv, or test with --manifest."
            )


def aligned(result: dict, order: list[str]) -> tuple[np.ndarray, np.ndarray]:
    position = {p: i for i, p in enumerate(result["paths"])}
    idx = np.array([position[p] for p in order])
    return result["targets"][idx], result["predicted"][idx]


def _flat(row: dict) -> dict:
    """(low, high) values as two columns, for CSV."""
    flat = {}
    for key, value in row.items():
        if isinstance(value, tuple):
            flat |= {f"{key}_low": value[0], f"{key}_high": value[1]}
        else:
            flat[key] = value
    return flat


def _points(value: float, ci: tuple[float, float]) -> str:
    return f"{100 * value:+.2f} [{100 * ci[0]:+.2f}, {100 * ci[1]:+.2f}]"


def _f1(value: float, ci: tuple[float, float]) -> str:
    return f"{value:+.4f} [{ci[0]:+.4f}, {ci[1]:+.4f}]"


def run_row(result: dict, order: list[str], n_resamples: int, seed: int) -> dict:
    """One run's row of the comparison: every metric of kvasir_mobileone.metrics (those with an interval recomputed,
    with it, on the shared test images; the others from the run's report), sizes and latency."""
    targets, predicted = aligned(result, order)
    intervals = metric_intervals(targets, predicted, n_resamples, seed)
    labels = present_classes(targets)
    row = {"run": result["name"], "model": result["model"]}
    for key, metric in METRICS.items():
        # point estimates (and intervals) from the same functions on the same predictions; the rest from the report
        top1 = key in TOP1_METRICS
        row[key] = float(top1_metric(key, labels)(targets, predicted)) if top1 else result["metrics"].get(key)
        if metric.interval:
            row[f"{key}_ci_low"], row[f"{key}_ci_high"] = intervals[f"{key}_ci"]
    info = result["info"]
    return row | {
        "params_train": info.get("parameters_unfused"),
        "params_fused": info.get("parameters_fused"),
        "onnx_mb": info.get("onnx_bytes") and info["onnx_bytes"] / 1e6,
        "latency_ms_batch1": info.get("onnxruntime_ms_batch1"),
    }


def run_cells(row: dict) -> list[str]:
    """A run's row as the markdown table shows it: each metric as every report writes it."""
    shown = [
        m.text({k: row[k]} | ({f"{k}_ci": (row[f"{k}_ci_low"], row[f"{k}_ci_high"])} if m.interval else {}))
        for k, m in METRICS.items()
    ]
    return [
        row["run"],
        row["model"],
        *shown,
        f"{row['params_train']:,}" if row["params_train"] else "—",
        f"{row['params_fused']:,}" if row["params_fused"] else "—",
        f"{row['onnx_mb']:.1f}" if row["onnx_mb"] else "—",
        f"{row['latency_ms_batch1']:.2f}" if row["latency_ms_batch1"] else "—",
    ]


def comparison_markdown(rows: list[dict], pairs: list[dict], n_images: int, n_resamples: int) -> str:
    """comparison.md: the runs' table, then the paired differences."""
    header = [
        "run",
        "model",
        *[m.label + (" [95% CI]" if m.interval else "") for m in METRICS.values()],
        "params (train)",
        "params (fused)",
        "ONNX MB",
        "ms/image (ORT, batch 1)",
    ]
    pair_rows = [
        [
            p["a"],
            p["b"],
            _points(p["accuracy_difference"], p["accuracy_difference_ci"]),
            _f1(p["f1_macro_difference"], p["f1_macro_difference_ci"]),
            p["only_a_correct"],
            p["only_b_correct"],
            f"{p['p_value']:.4g}",
        ]
        for p in pairs
    ]
    pair_header = [
        "A",
        "B",
        "accuracy A−B (points) [95% CI]",
        "macro-F1 A−B [95% CI]",
        "only A right",
        "only B right",
        "McNemar exact p",
    ]
    text = (
        f"# Comparison on {n_images} shared test images\n\n"
        + markdown_table(header, [run_cells(r) for r in rows])
        + f"\n95% intervals: Wilson for accuracy, BCa bootstrap over test images ({n_resamples} resamples) for "
        f"{BOOTSTRAPPED}. F1 is micro-F1 as in the original table (equal to accuracy); macro-F1 "
        "averages the F1, balanced accuracy the recall, of the classes that have test images.\n\n"
        "## Paired differences\n\n"
        + markdown_table(pair_header, pair_rows)
        + "\nDifferences: paired BCa bootstrap over the shared test images (an interval that holds 0 says the data "
        "cannot tell the runs apart). McNemar's exact test looks only at the images on which the two runs disagree; "
        "p < 0.05 says the difference in accuracy is unlikely to be chance on this test set.\n\n"
        "![comparison](comparison.png)\n"
    )
    return text


def write_comparison(out_dir: Path, text: str, rows: list[dict], pairs: list[dict], n_images: int) -> None:
    """comparison.md, .csv, .json, pairs.csv and the plot."""
    write_text(out_dir / "comparison.md", text)
    write_csv(out_dir / "comparison.csv", list(rows[0]), [list(r.values()) for r in rows])
    flat_pairs = [_flat(p) for p in pairs]
    write_csv(out_dir / "pairs.csv", list(flat_pairs[0]), [list(p.values()) for p in flat_pairs])
    write_json(out_dir / "comparison.json", {"runs": rows, "pairs": pairs, "test_images": n_images})
    _plot(rows, out_dir / "comparison.png")


def _plot(rows: list[dict], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(rows)), 4.5))
    x = np.arange(len(rows))
    for offset, key, label in ((-0.18, "accuracy", "accuracy"), (0.18, "f1_macro", "macro-F1")):
        values = np.array([r[key] for r in rows]) * 100
        low = values - np.array([r[f"{key}_ci_low"] for r in rows]) * 100
        high = np.array([r[f"{key}_ci_high"] for r in rows]) * 100 - values
        ax.bar(x + offset, values, width=0.36, yerr=[low, high], capsize=4, label=label)
    ax.set_xticks(x, [r["run"] for r in rows], rotation=20, ha="right")
    ax.set_ylim(0, 118)  # room for the legend above the bars
    ax.set_ylabel("test score (%) with 95% CI")
    ax.set_xlabel("run")
    ax.set_title("Test accuracy and macro-F1 on the shared test set")
    ax.legend(loc="upper right", ncol=2)
    return save_figure(fig, path)
