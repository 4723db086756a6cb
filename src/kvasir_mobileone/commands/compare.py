"""`kvasir compare`: runs tested on the same images, side by side, with paired intervals and McNemar's test."""

from __future__ import annotations

import itertools
from pathlib import Path

from kvasir_mobileone.errors import UserError
from kvasir_mobileone.evaluation.compare import (
    aligned,
    comparison_markdown,
    load_result,
    run_row,
    same_test_set,
    write_comparison,
)
from kvasir_mobileone.evaluation.intervals import paired_difference


def compare(runs: list[str], out: str = "comparison", n_resamples: int = 2000, seed: int = 0) -> Path:
    """The original table (Accuracy, Top-3, Top-5, F1) plus macro-F1, MCC, sizes, 95% bootstrap CIs and McNemar."""
    if len(runs) < 2:
        raise UserError("Give two or more run folders to compare.")
    results = [load_result(r) for r in runs]
    same_test_set(results)
    order = sorted(results[0]["paths"])
    rows = [run_row(r, order, n_resamples, seed) for r in results]
    pairs = []
    for a, b in itertools.combinations(results, 2):
        targets, predicted_a = aligned(a, order)
        diff = paired_difference(targets, predicted_a, aligned(b, order)[1], n_resamples, seed)
        pairs.append({"a": a["name"], "b": b["name"], **diff})
    text = comparison_markdown(rows, pairs, len(order), n_resamples)
    write_comparison(Path(out), text, rows, pairs, len(order))
    print(text)
    return Path(out)
