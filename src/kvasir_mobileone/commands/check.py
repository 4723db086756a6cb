"""`kvasir check`: every problem of an image folder or a split up front (data/check.py finds them; this prints them)."""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import numpy as np

from kvasir_mobileone.data.check import (
    NEAR_DUPLICATE_BITS,
    FolderReport,
    check_folder,
    check_split,
    problem_summary,
    write_problems,
)
from kvasir_mobileone.data.config import DataConfig
from kvasir_mobileone.data.eda import thumbnails
from kvasir_mobileone.data.folder import DataError
from kvasir_mobileone.data.split import describe_gaps, describe_leaks, make_split, split_gaps, write_leaks
from kvasir_mobileone.evaluation.frames import frame_report
from kvasir_mobileone.io import markdown_table, write_json
from kvasir_mobileone.runs import LEAKS_NAME


def check(
    data_dir: str = "data/kvasir-dataset-v2",
    out: str | None = None,
    near_duplicate_bits: int = NEAR_DUPLICATE_BITS,
    manifest: str | None = None,
    official_split: str | None = None,
    fold: int = 0,
    frames: bool = True,
) -> FolderReport:
    """List every problem of an image folder or a split before training.

    List every problem of an image folder (unreadable, odd, tiny, duplicate files ...) before training; with
    --manifest or --official_split, of that split's images, and the near-duplicate groups that straddle it. With
    --frames (default) also how well the frame's outline alone predicts the class (OUT/frame_maps.png)."""
    if manifest or official_split:
        data = DataConfig(data_dir, manifest, official_split=official_split, fold=fold)
        rows, report, official = check_split(dataclasses.replace(data, near_duplicate_bits=near_duplicate_bits))
    else:
        report, rows, official = check_folder(data_dir, near_duplicate_bits), None, None
    print(f"Found a {report.layout}." if not manifest else f"Checked the {report.layout}.")
    for line in official.lines() if official else []:
        print(line)
    problem_rows = [[p.severity, p.kind, p.path, p.message] for p in report.problems]
    if problem_rows:
        print(markdown_table(["severity", "kind", "path", "what"], problem_rows[:200]))
    excluded = len(report.excluded)
    print(
        f"{len(report.items)} usable images in {len(Counter(c for _, c in report.items))} classes; "
        f"{excluded} would be excluded from training; {len(report.duplicate_groups)} duplicate groups. "
        f"({problem_summary(report.problems)})"
    )
    if rows is None:
        try:  # the split fit would make with the default fractions
            gaps = split_gaps(make_split(report.items, groups=report.group_of()))
        except DataError as err:
            print(f"warning: {err}")
        else:
            if gaps:
                print("warning: with 10% val and 10% test: " + describe_gaps(gaps))
    else:
        leaking = describe_leaks(rows)
        print(f"warning: {leaking}." if leaking else "No near-duplicate group straddles the split.")
        if leaking and out:
            print(f"Written: {write_leaks(Path(out) / LEAKS_NAME, rows)}")
    if frames and report.items:
        names = sorted({c for _, c in report.items})
        labels = np.array([names.index(c) for _, c in report.items])
        found = frame_report(thumbnails(Path(data_dir), report.items), labels, names, out)
        print(found["line"])
    if out:
        write_problems(Path(out) / "problems.csv", report.problems)
        write_json(Path(out) / "check.json", asdict(report))
        print(f"Written: {out}/problems.csv, {out}/check.json")
    return report
