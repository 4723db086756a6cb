"""Official splits (HyperKvasir's 2- and 5-fold CSVs, shipped with the package, or any CSV in their format) applied
to a checked folder: images are matched by file name, labels come from the folders, the CSV assigns the folds.
Nothing is guessed silently: the class-name mapping, CSV rows without a file and files without a row are reported."""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from kvasir_mobileone.data.catalog import OFFICIAL_SPLITS
from kvasir_mobileone.data.folder import DataError
from kvasir_mobileone.data.split import carve_validation

OFFICIAL_HEADER = ("file-name", "class-name", "split-index")


@dataclass
class OfficialSplit:
    """What applying an official split found, for the console and the run folder."""

    name: str
    source: Path
    fold: int
    folds: int
    name_mapping: dict[str, list[str]] = field(default_factory=dict)  # CSV class -> folder classes its files are in
    rows_without_file: dict[str, int] = field(default_factory=dict)  # CSV class -> rows whose file is not there
    files_without_row: list[str] = field(default_factory=list)  # relative paths the CSV does not list

    def lines(self) -> list[str]:
        """What a user should read once: the mapping, what is missing on either side."""
        out = [f"Official split {self.name} ({self.source.name}, {self.folds} folds): fold {self.fold} is test."]
        renamed = {c: f for c, f in self.name_mapping.items() if f != [c]}
        if renamed:
            out.append(
                "CSV class -> folder class (labels come from the folders): "
                + ", ".join(f"{c} -> {'/'.join(f)}" for c, f in sorted(renamed.items()))
            )
        split_classes = {c: f for c, f in self.name_mapping.items() if len(f) > 1}
        if split_classes:
            out.append(
                "warning: files of one CSV class sit in several folders: "
                + "; ".join(f"{c}: {', '.join(f)}" for c, f in sorted(split_classes.items()))
            )
        if self.rows_without_file:
            total = sum(self.rows_without_file.values())
            out.append(
                f"{total} rows of the split have no file in the data folder (a subset or a partial download?): "
                + ", ".join(f"{c} {n}" for c, n in sorted(self.rows_without_file.items()))
            )
        if self.files_without_row:
            out.append(
                f"warning: {len(self.files_without_row)} images are not in the split and are left out: "
                + ", ".join(self.files_without_row[:10])
                + (" ..." if len(self.files_without_row) > 10 else "")
            )
        return out


def official_split_path(name_or_path: str) -> tuple[str, Path]:
    """(name, CSV path) of a shipped split (hyper-kvasir-2fold, hyper-kvasir-5fold) or a CSV file in that format."""
    if name_or_path in OFFICIAL_SPLITS:
        return name_or_path, OFFICIAL_SPLITS[name_or_path][0]
    path = Path(name_or_path)
    if not path.is_file():
        raise DataError(
            f"--data.official_split {name_or_path!r} is neither a shipped split ({', '.join(OFFICIAL_SPLITS)}) nor "
            "a CSV file (file-name;class-name;split-index)."
        )
    return path.stem, path


def read_official_split(path: Path) -> dict[str, tuple[str, int]]:
    """file name -> (CSV class, fold) from a `file-name;class-name;split-index` file."""
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter=";")
        if set(OFFICIAL_HEADER) - set(reader.fieldnames or ()):
            raise DataError(f"{path} is not an official split: it needs the columns {';'.join(OFFICIAL_HEADER)}.")
        table: dict[str, tuple[str, int]] = {}
        for line, row in enumerate(reader, start=2):
            name = row["file-name"]
            try:
                fold = int(row["split-index"])
            except ValueError as err:
                raise DataError(f"{path}, line {line}: split-index {row['split-index']!r} is not a number.") from err
            if name in table:
                raise DataError(f"{path}, line {line}: {name} is listed twice.")
            table[name] = (row["class-name"], fold)
    return table


def apply_official_split(
    items: list[tuple[str, str]],
    name_or_path: str,
    fold: int,
    groups: dict[str, int],
    val_fraction: float = 0.1,
    seed: int = 42,
) -> tuple[list[dict[str, str]], OfficialSplit]:
    """Manifest rows for fold `fold` of an official split: the fold's images are test, the other folds train, and
    val is carved from train (stratified, seeded, near-duplicate groups kept together)."""
    name, source = official_split_path(name_or_path)
    table = read_official_split(source)
    fold_ids = sorted({f for _, f in table.values()})
    if fold not in fold_ids:
        raise DataError(f"--data.fold {fold} is not a fold of {name}: its folds are {', '.join(map(str, fold_ids))}.")
    folds = len(fold_ids)
    by_name: dict[str, list[str]] = {}
    for rel, _ in items:
        by_name.setdefault(PurePosixPath(rel).name, []).append(rel)
    twice = {n: paths for n, paths in by_name.items() if len(paths) > 1 and n in table}
    if twice:
        example = next(iter(twice.values()))
        raise DataError(
            f"{len(twice)} file names of {name} occur more than once in the data folder (e.g. {', '.join(example)}): "
            "images are matched to the split by file name, so each must be unique."
        )
    report = OfficialSplit(name, source, fold, folds)
    mapping: dict[str, Counter] = {}
    matched, test = [], set()
    for rel, label in items:
        entry = table.get(PurePosixPath(rel).name)
        if entry is None:
            report.files_without_row.append(rel)
            continue
        csv_class, item_fold = entry
        mapping.setdefault(csv_class, Counter())[label] += 1
        matched.append((rel, label))
        if item_fold == fold:
            test.add(rel)
    present = {PurePosixPath(rel).name for rel, _ in matched}
    report.rows_without_file = dict(Counter(c for n, (c, _) in table.items() if n not in present))
    report.name_mapping = {c: sorted(folders) for c, folders in sorted(mapping.items())}
    if not test:
        raise DataError(f"No image of fold {fold} of {name} is in the data folder: nothing to test on.")
    rest = [(rel, label) for rel, label in matched if rel not in test]
    if not rest:
        raise DataError(f"Only images of fold {fold} of {name} are in the data folder: nothing to train on.")
    split_of = carve_validation(rest, groups, val_fraction, seed) | {rel: "test" for rel in test}
    return [{"path": rel, "label": label, "split": split_of[rel]} for rel, label in matched], report
