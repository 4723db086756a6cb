"""The stratified train/val/test split and its manifest CSV. Pure Python and scikit-learn: no torch."""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from kvasir_mobileone.data.folder import DataError
from kvasir_mobileone.io import read_csv, write_csv

log = logging.getLogger(__name__)  # notes; `kvasir` shows them on stdout

SPLITS = ("train", "val", "test")
MANIFEST_HEADER = ("path", "label", "split")
GROUP = "group"  # optional 4th column: the near-duplicate group of the image (images of one group are near-copies)


def group_labels(items: list[tuple[str, str]], groups: dict[str, int]) -> dict[int, str]:
    """The label a duplicate group is stratified by: its most common label (ties: alphabetical first)."""
    votes: dict[int, Counter] = {}
    for path, label in items:
        votes.setdefault(groups[path], Counter())[label] += 1
    return {g: min(c.items(), key=lambda kv: (-kv[1], kv[0]))[0] for g, c in votes.items()}


def make_split(
    items: list[tuple[str, str]],
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 42,
    groups: dict[str, int] | None = None,
) -> list[dict[str, str]]:
    """Stratified train/val/test split of (path, label) items; the same seed gives the same split.

    Items sharing a group (duplicates, near-duplicates) always land in the same split, so the test set cannot
    hold a copy of a training image: the split is drawn over groups, each stratified by its majority label."""
    groups = groups or {p: i for i, (p, _) in enumerate(items)}
    label_of_group = group_labels(items, groups)
    keys = list(label_of_group)
    labels = [label_of_group[k] for k in keys]
    holdout = val_fraction + test_fraction
    try:
        train_k, rest_k, _, rest_y = train_test_split(
            keys, labels, test_size=holdout, stratify=labels, random_state=seed
        )
        val_k, test_k = train_test_split(rest_k, test_size=test_fraction / holdout, stratify=rest_y, random_state=seed)
    except ValueError as err:  # a class too small for scikit-learn's stratification (HyperKvasir: 6 hemorrhoids)
        smallest = min(Counter(labels).items(), key=lambda kv: kv[1])
        if not (val_fraction > 0 and test_fraction > 0 and holdout < 1) or len(keys) < 3:
            raise DataError(
                f"Cannot make a stratified {1 - holdout:.0%}/{val_fraction:.0%}/{test_fraction:.0%} split of "
                f"{len(keys)} images ({err}): give --data.val_fraction and --data.test_fraction above 0 and below 1 "
                "together."
            ) from err
        train_k, val_k, test_k = split_per_class(keys, labels, val_fraction, test_fraction, seed)
        log.info(
            f"Class {smallest[0]!r} has only {smallest[1]} distinct images: the split was drawn class by class "
            "(each class of 3 or more images has at least one val and one test image; smaller classes train only)."
        )
    split_of_group = {k: "train" for k in train_k} | {k: "val" for k in val_k} | {k: "test" for k in test_k}
    return [{"path": p, "label": c, "split": split_of_group[groups[p]]} for p, c in items]


def split_per_class(
    keys: list, labels: list[str], val_fraction: float, test_fraction: float, seed: int
) -> tuple[list, list, list]:
    """(train, val, test) keys drawn class by class, seeded: round(fraction x n) val and test images per class, at
    least one each for a class of 3 or more, none for a smaller one (it is reported as missing from val/test)."""
    rng = np.random.default_rng(seed)
    train, val, test = [], [], []
    for label in sorted(set(labels)):
        members = [k for k, y in zip(keys, labels, strict=True) if y == label]
        members = [members[i] for i in rng.permutation(len(members))]
        n = len(members)
        n_test = max(1, round(test_fraction * n)) if n >= 3 else 0
        n_val = max(1, round(val_fraction * n)) if n >= 3 else 0
        test += members[:n_test]
        val += members[n_test : n_test + n_val]
        train += members[n_test + n_val :]
    return train, val, test


def write_manifest(path: str | Path, rows: list[dict[str, str]]) -> Path:
    """path, label, split, and the near-duplicate group when the rows carry one."""
    header = MANIFEST_HEADER + ((GROUP,) if rows and all(GROUP in r for r in rows) else ())
    return write_csv(path, header, [[r[k] for k in header] for r in rows])


def with_groups(rows: list[dict[str, str]], groups: dict[str, int]) -> list[dict[str, str]]:
    """The rows with their near-duplicate group, as the manifest records it ("" for an image the check could not
    read, which belongs to no group)."""
    return [r | {GROUP: str(groups[r["path"]]) if r["path"] in groups else ""} for r in rows]


def carve_validation(
    items: list[tuple[str, str]], groups: dict[str, int], val_fraction: float, seed: int
) -> dict[str, str]:
    """{path: "train" | "val"}: about val_fraction of the items as val, stratified by class, seeded, and with every
    near-duplicate group on one side (StratifiedGroupKFold: one fold of round(1 / val_fraction))."""
    from sklearn.model_selection import StratifiedGroupKFold

    labels = np.array([label for _, label in items])
    group_ids = np.array([groups[path] for path, _ in items])
    # StratifiedGroupKFold needs a class with at least n_folds images: on tiny data val takes a larger share
    n_folds = max(2, min(round(1 / max(val_fraction, 1e-9)), max(Counter(labels.tolist()).values())))
    with warnings.catch_warnings():  # a class smaller than n_folds is expected (HyperKvasir: 6 hemorrhoids)
        warnings.simplefilter("ignore", UserWarning)
        _, val = next(StratifiedGroupKFold(n_folds, shuffle=True, random_state=seed).split(labels, labels, group_ids))
    val_set = set(val.tolist())
    return {path: "val" if i in val_set else "train" for i, (path, _) in enumerate(items)}


def leaks(rows: list[dict[str, str]]) -> list[list[dict[str, str]]]:
    """The near-duplicate groups whose members sit in more than one split: each group's rows, sorted by split."""
    by_group: dict[str, list[dict[str, str]]] = {}
    for r in rows:
        if r.get(GROUP, "") != "":
            by_group.setdefault(r[GROUP], []).append(r)
    order = {s: i for i, s in enumerate(SPLITS)}
    return [
        sorted(members, key=lambda r: (order[r["split"]], r["path"]))
        for members in by_group.values()
        if len({r["split"] for r in members}) > 1
    ]


def describe_leaks(rows: list[dict[str, str]]) -> str | None:
    """One sentence on the near-duplicate groups that straddle the split, or None when none does."""
    leaking = leaks(rows)
    if not leaking:
        return None
    tests = sum(r["split"] == "test" for r in rows)
    clean = len(leak_free_test(rows))
    example = ", ".join(f"{r['path']} ({r['split']})" for r in leaking[0][:3])
    return (
        f"{len(leaking)} near-duplicate groups straddle the split: {tests - clean} of {tests} test images have a "
        f"near-copy in train or val (e.g. {example})"
    )


def write_leaks(path: str | Path, rows: list[dict[str, str]]) -> Path:
    """The straddling groups, one row per image: group, split, label, path."""
    return write_csv(
        path,
        ["group", "split", "label", "path"],
        [[r[GROUP], r["split"], r["label"], r["path"]] for group in leaks(rows) for r in group],
    )


def leak_free_test(rows: list[dict[str, str]]) -> set[str]:
    """Test images with no near-duplicate in train or val (every test image when the rows carry no groups)."""
    seen_in_training = {r[GROUP] for r in rows if r["split"] != "test" and r.get(GROUP, "") != ""}
    return {r["path"] for r in rows if r["split"] == "test" and r.get(GROUP, "") not in seen_in_training}


def read_manifest(path: str | Path) -> list[dict[str, str]]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"Split manifest {path} not found. Give an existing manifest, or none to make a new split.")
    rows = read_csv(path)
    if not rows or set(MANIFEST_HEADER) - set(rows[0]):
        raise DataError(f"{path} is not a split manifest: it needs the columns {', '.join(MANIFEST_HEADER)}.")
    return rows


def check_manifest_files(rows: list[dict[str, str]], data_dir: str | Path, manifest: str | Path) -> None:
    """Every file a reused manifest names must still exist."""
    missing = [r["path"] for r in rows if not (Path(data_dir) / r["path"]).is_file()]
    if missing:
        raise DataError(
            f"The split manifest {manifest} names {len(missing)} files missing from {data_dir}, e.g. "
            f"{', '.join(missing[:5])}. Restore them, point the data folder option (fit: --data.data_dir, other "
            "commands: --data_dir) at the right folder, or make a new split (fit without --data.manifest)."
        )


def class_names_of(rows: list[dict[str, str]]) -> list[str]:
    return sorted({r["label"] for r in rows})


def split_counts(rows: list[dict[str, str]]) -> dict[str, dict[str, int]]:
    """{split: {class: count}} for every split and class, zeros included."""
    counts = Counter((r["split"], r["label"]) for r in rows)
    return {s: {c: counts[(s, c)] for c in class_names_of(rows)} for s in SPLITS}


def split_gaps(rows: list[dict[str, str]]) -> dict[str, list[str]]:
    """{class: [splits it has no image in]} for every class too small to reach every split."""
    counts = split_counts(rows)
    gaps = {c: [s for s in SPLITS if counts[s][c] == 0] for c in class_names_of(rows)}
    return {c: splits for c, splits in gaps.items() if splits}


def describe_gaps(gaps: dict[str, list[str]]) -> str:
    """What a report will lack because of split gaps, in one sentence per class."""
    lack = {
        "train": "the model never sees it",
        "val": "it plays no part in choosing the best checkpoint",
        "test": "the test report has no figure for it and its macro-F1 leaves it out",
    }
    return " ".join(
        f"Class {c!r} has no {'/'.join(splits)} image: " + "; ".join(lack[s] for s in splits) + "."
        for c, splits in gaps.items()
    )


def read_exclusions(path: str | Path, data_dir: str | Path | None = None) -> frozenset[str]:
    """The paths --data.exclude names: a CSV's `path` column (kvasir label-issues writes one), or one path per line
    of a text file (blank lines and # comments skipped), as the split spells them: relative to the data folder, with
    forward slashes (`./x.jpg` and absolute paths inside `data_dir` are made so)."""
    entries = _exclusion_entries(Path(path))
    root = Path(data_dir).resolve() if data_dir else None
    relative = set()
    for entry in entries:
        candidate = Path(entry)
        if candidate.is_absolute() and root is not None and candidate.resolve().is_relative_to(root):
            candidate = candidate.resolve().relative_to(root)
        relative.add(candidate.as_posix().removeprefix("./"))
    return frozenset(relative)


def _exclusion_entries(path: Path) -> frozenset[str]:
    if not path.is_file():
        raise DataError(f"--data.exclude {path}: no such file. Give a CSV with a path column or a list of paths.")
    text = path.read_text()
    first = text.splitlines()[0] if text.strip() else ""
    if path.suffix == ".csv" or "," in first:
        rows = read_csv(path)
        if rows and "path" not in rows[0]:
            raise DataError(f"--data.exclude {path}: the CSV has no `path` column (its columns: {', '.join(rows[0])}).")
        return frozenset(r["path"] for r in rows)
    return frozenset(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))
