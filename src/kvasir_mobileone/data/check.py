"""`kvasir check`: every problem of an image folder up front: unreadable files, odd formats, tiny images, empty
class folders, broken links, system files, and exact or near-duplicate images (perceptual hash)."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile
from tqdm import tqdm

from kvasir_mobileone.data.cache import CACHE_DIR_NAME, stamp
from kvasir_mobileone.data.config import DataConfig
from kvasir_mobileone.data.folder import (
    SYSTEM_FILES,
    DataError,
    default_num_workers,
    find_class_folders,
    is_hidden,
    walk,
)
from kvasir_mobileone.data.official import OfficialSplit, apply_official_split
from kvasir_mobileone.data.split import (
    check_manifest_files,
    make_split,
    read_manifest,
    with_groups,
)
from kvasir_mobileone.images import to_rgb
from kvasir_mobileone.io import IMAGE_EXTENSIONS, read_csv, write_csv, write_json

MIN_SIDE = 32  # smaller images are kept but reported: upsampling them to the model's input size invents detail
NEAR_DUPLICATE_BITS = 2  # phash Hamming distance (of 64 bits) at or below which two images count as near-duplicates
# Below this standard deviation (grey levels, at 64 px) an image is flat: every flat image has the same perceptual
# hash, so hashing would chain unrelated solid frames into one group. Flat images are grouped by exact content only.
FLAT_STD = 2.0

# Loading must fail loudly on a truncated file, not pad it with grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False


class DataCheckError(DataError):
    """The folder cannot be used as it is; the message lists the files and what to do."""


@dataclass
class Problem:
    path: str
    kind: str  # unreadable | small | converted | ignored | empty-class | broken-link | duplicate | label-conflict
    message: str
    severity: str = "warning"  # error: the file is excluded; warning: kept, reported


@dataclass
class FolderReport:
    data_dir: str
    items: list[tuple[str, str]]  # usable (relative path, class)
    problems: list[Problem] = field(default_factory=list)
    duplicate_groups: list[list[str]] = field(default_factory=list)  # relative paths, 2 or more per group
    layout: str = ""  # what the check found: the folder's layout, or the list it checked
    excluded_by_request: list[str] = field(default_factory=list)  # left out by --data.exclude (check_split)

    @property
    def excluded(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    def group_of(self) -> dict[str, int]:
        """Relative path -> duplicate group id, for every item (singletons get their own id)."""
        group = {}
        for gid, members in enumerate(self.duplicate_groups):
            for m in members:
                group[m] = gid
        next_id = len(self.duplicate_groups)
        for rel, _ in self.items:
            if rel not in group:
                group[rel] = next_id
                next_id += 1
        return group


def inspect_image(path: str) -> dict:
    """Decode one image fully (reduced-size decode for JPEG) and return its size, mode, hashes or an error."""
    try:
        if os.path.getsize(path) == 0:
            return {"error": "empty file (0 bytes)"}
        with open(path, "rb") as f:
            sha1 = hashlib.sha1(f.read()).hexdigest()
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                size, mode, fmt = image.size, image.mode, image.format
                if fmt == "JPEG":
                    image.draft("RGB", (64, 64))
                rgb = to_rgb(image)  # the same conversion training uses
                rgb.load()
        import imagehash

        flat = float(np.asarray(rgb.convert("L"), dtype=np.float32).std()) < FLAT_STD
        phash = int(str(imagehash.phash(rgb)), 16)
        return {"size": size, "mode": mode, "format": fmt, "sha1": sha1, "phash": phash, "flat": flat}
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        return {"error": f"decompression bomb refused ({err})"}
    except Exception as err:  # anything else that stops decoding: the file cannot be used
        return {"error": f"{type(err).__name__}: {err}"}


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bits that differ between 64-bit hashes, broadcast: popcount of XOR (numpy >= 2), else bit by bit."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(a ^ b)
    bits = np.unpackbits((a ^ b).astype(">u8")[..., None].view(np.uint8), axis=-1)
    return bits.sum(axis=-1)


def _hamming_groups(paths: list[str], hashes: np.ndarray, max_bits: int) -> list[list[str]]:
    """Connected groups of images whose 64-bit hashes differ in at most max_bits bits."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    hashes = hashes.astype(np.uint64)
    rows, cols = [], []
    for start in range(0, len(paths), 512):  # blocks keep memory at 512 x n
        i, j = np.nonzero(hamming(hashes[start : start + 512, None], hashes[None, :]) <= max_bits)
        rows.append(i + start)
        cols.append(j)
    n = len(paths)
    if not n:
        return []
    edges = np.concatenate(rows), np.concatenate(cols)
    _, component = connected_components(coo_matrix((np.ones(len(edges[0])), edges), shape=(n, n)), directed=False)
    groups: dict[int, list[str]] = {}
    for path, c in zip(paths, component.tolist(), strict=True):
        groups.setdefault(c, []).append(path)
    return [sorted(g) for g in groups.values() if len(g) > 1]


def _exact_groups(paths: list[str], infos: dict[str, dict]) -> list[list[str]]:
    """Groups of byte-identical files (same SHA-1)."""
    by_sha: dict[str, list[str]] = {}
    for p in paths:
        by_sha.setdefault(infos[p]["sha1"], []).append(p)
    return [sorted(g) for g in by_sha.values() if len(g) > 1]


def check_folder(
    data_dir: str | Path,
    near_duplicate_bits: int = NEAR_DUPLICATE_BITS,
    workers: int | None = None,
    cache_dir: str | Path | None = None,
) -> FolderReport:
    """Find the class folders of data_dir (at any depth) and inspect every file; raise DataCheckError when nothing
    usable is left."""
    layout = find_class_folders(data_dir)
    root = layout.root
    problems: list[Problem] = []
    candidates: list[tuple[str, str]] = []
    for folder in layout.skipped:
        if folder.name != CACHE_DIR_NAME:  # this tool's own decode-once cache
            problems.append(
                Problem(folder.relative_to(root).as_posix() + "/", "ignored", "system or hidden folder, not a class")
            )
    for folder in layout.empty:
        problems.append(
            Problem(folder.relative_to(root).as_posix() + "/", "empty-class", "folder with no images: not a class")
        )
    for path in layout.loose:
        problems.append(Problem(path.name, "ignored", "image outside any class folder: it has no class"))
    for rel, label, path in walk(root, layout):
        if is_hidden(Path(rel).parts):
            if path.is_file() and path.name not in SYSTEM_FILES:
                problems.append(Problem(rel, "ignored", "hidden file"))
        elif path.is_symlink() and not path.exists():
            problems.append(Problem(rel, "broken-link", "symbolic link to a missing file", "error"))
        elif path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
            candidates.append((rel, label))
        elif path.is_file() and path.name not in SYSTEM_FILES:
            problems.append(Problem(rel, "ignored", f"not an image extension ({', '.join(IMAGE_EXTENSIONS)})"))
    return inspect_items(root, candidates, problems, near_duplicate_bits, workers, layout.describe(), cache_dir)


def check_items(
    data_dir: str | Path,
    items: list[tuple[str, str]],
    source: str,
    near_duplicate_bits: int = NEAR_DUPLICATE_BITS,
    workers: int | None = None,
    cache_dir: str | Path | None = None,
) -> FolderReport:
    """The same check for a list of (relative path, class) that a manifest or an official split names: every
    listed file is inspected as a folder's would be (unreadable files, duplicates, label conflicts)."""
    root = Path(data_dir)
    problems, candidates = [], []
    for rel, label in items:
        path = root / rel
        if path.is_symlink() and not path.exists():
            problems.append(Problem(rel, "broken-link", "symbolic link to a missing file", "error"))
        else:
            candidates.append((rel, label))
    listed = f"{len(items)} images listed in {source}"
    return inspect_items(root, candidates, problems, near_duplicate_bits, workers, listed, cache_dir)


def inspect_items(
    root: Path,
    candidates: list[tuple[str, str]],
    problems: list[Problem],
    near_duplicate_bits: int,
    workers: int | None,
    layout: str,
    cache_dir: str | Path | None = None,
) -> FolderReport:
    """Inspect every candidate image (unreadable, small, converted), group exact and near-duplicates, and flag
    groups that carry two labels."""
    infos = inspect_cached(root, [rel for rel, _ in candidates], workers, cache_dir)
    items = []
    for (rel, label), info in zip(candidates, infos, strict=True):
        if "error" in info:
            problems.append(Problem(rel, "unreadable", info["error"] + "; delete or replace the file", "error"))
            continue
        items.append((rel, label))
        w, h = info["size"]
        if min(w, h) < MIN_SIDE:
            problems.append(Problem(rel, "small", f"only {w}x{h} pixels"))
        if info["mode"] not in ("RGB", "L") or info["format"] not in ("JPEG", "PNG"):
            problems.append(Problem(rel, "converted", f"{info['format']} {info['mode']} image, converted to 8-bit RGB"))

    usable = {rel: info for (rel, _), info in zip(candidates, infos, strict=True) if "error" not in info}
    textured = [p for p in usable if not usable[p]["flat"]]
    hashes = np.array([usable[p]["phash"] for p in textured], dtype=np.uint64)
    groups = _hamming_groups(textured, hashes, near_duplicate_bits) if near_duplicate_bits >= 0 else []
    groups += _exact_groups([p for p in usable if usable[p]["flat"]], usable)
    label_of = dict(items)
    for members in groups:
        exact = len({usable[m]["sha1"] for m in members}) == 1
        labels = sorted({label_of[m] for m in members})
        kind = "label-conflict" if len(labels) > 1 else "duplicate"
        what = "identical files" if exact else f"near-duplicates (phash within {near_duplicate_bits} bits)"
        note = f"; labelled {labels}: check which label is right" if len(labels) > 1 else ""
        problems.append(Problem(members[0], kind, f"{what} with {', '.join(members[1:])}: kept in one split{note}"))

    classes = Counter(label for _, label in items)
    if not items:
        raise DataCheckError(f"No readable images in {root}: " + problem_summary(problems))
    if len(classes) < 2:
        raise DataCheckError(
            f"{root} holds a single class ({next(iter(classes))}); a classifier needs at least two class folders."
        )
    return FolderReport(str(root), items, problems, groups, layout)


CHECK_CACHE = "check_v1.json"  # in the data folder's .kvasir_cache: what inspect_image found, per file and stamp


def inspect_cached(
    root: Path, rel_paths: list[str], workers: int | None, cache_dir: str | Path | None = None
) -> list[dict]:
    """inspect_image for every path, each file decoded and hashed once: results are kept in
    DATA/.kvasir_cache/check_v1.json keyed by the file's size and modification time, so a second check of the same
    files (fit, cv, check --manifest) reads them back. `cache_dir` (--data.cache_dir) for a read-only data folder."""
    cache_file = (Path(cache_dir) if cache_dir else root / CACHE_DIR_NAME) / CHECK_CACHE
    try:
        known = json.loads(cache_file.read_text()) if cache_file.is_file() else {}
    except (OSError, ValueError):
        known = {}  # a damaged cache is rebuilt
    stamps = {}
    for rel in rel_paths:
        try:
            stamps[rel] = stamp(root / rel)
        except OSError:
            stamps[rel] = None  # missing or unreadable: inspect_image says why
    todo = [rel for rel in rel_paths if stamps[rel] is None or known.get(rel, {}).get("stamp") != stamps[rel]]
    fresh = dict(zip(todo, _inspect_all([str(root / rel) for rel in todo], workers), strict=True))
    if todo:
        known |= {rel: {"stamp": stamps[rel], "info": info} for rel, info in fresh.items() if stamps[rel]}
        try:
            write_json(cache_file, known)
        except OSError as err:  # a read-only data folder: the check still ran, only the next one is not faster
            warnings.warn(f"Could not keep the check's results in {cache_file} ({err}).", stacklevel=2)
    return [fresh[rel] if rel in fresh else known[rel]["info"] for rel in rel_paths]


def _inspect_all(paths: list[str], workers: int | None) -> list[dict]:
    workers = default_num_workers() if workers is None else workers
    if workers <= 1 or len(paths) < 64:
        return [inspect_image(p) for p in tqdm(paths, desc="check images", unit="img", disable=len(paths) < 64)]
    with ProcessPoolExecutor(workers) as pool:
        return list(tqdm(pool.map(inspect_image, paths, chunksize=32), total=len(paths), desc="check", unit="img"))


def problem_summary(problems: list[Problem]) -> str:
    counts = Counter(p.kind for p in problems)
    return ", ".join(f"{n} {k}" for k, n in counts.items()) or "no problems"


def write_problems(path: Path, problems: list[Problem]) -> Path:
    return write_csv(
        path, ["path", "kind", "severity", "message"], [[p.path, p.kind, p.severity, p.message] for p in problems]
    )


def add_problems(path: Path, problems: list[Problem]) -> Path:
    """`problems` appended to the data problems already listed in `path` (a run's data_problems.csv)."""
    rows = read_csv(path) if path.is_file() else []
    return write_problems(path, [Problem(r["path"], r["kind"], r["message"], r["severity"]) for r in rows] + problems)


def drop_excluded(report: FolderReport, exclude: frozenset[str]) -> list[str]:
    """Leave the paths of --data.exclude out of a checked folder's items; the paths left out, sorted."""
    removed = sorted(rel for rel, _ in report.items if rel in exclude)
    report.items = [(rel, label) for rel, label in report.items if rel not in exclude]
    return removed


def check_split(
    data: DataConfig, exclude: frozenset[str] = frozenset()
) -> tuple[list[dict[str, str]], FolderReport, OfficialSplit | None]:
    """A split and the check of its images, whoever made it, with every image's near-duplicate group: a manifest
    (its files checked as a folder's are, and used as it is, so an unreadable val/test image stops here), an
    official split of a checked folder, or a new stratified split of a checked folder (unreadable files excluded,
    near-duplicates kept together). Paths in `exclude` (--data.exclude) are left out of every split before it is
    made, or dropped from a manifest's. `data`: the data folder, the split settings (manifest, official_split,
    fold, val/test fractions, seed), near_duplicate_bits and cache_dir."""
    data_dir, manifest, official_split, seed = data.data_dir, data.manifest, data.official_split, data.seed
    near_duplicate_bits, cache_dir, val_fraction = data.near_duplicate_bits, data.cache_dir, data.val_fraction
    official = None
    if manifest:
        listed = read_manifest(manifest)
        rows = [r for r in listed if r["path"] not in exclude]
        removed = sorted({r["path"] for r in listed} - {r["path"] for r in rows})
        check_manifest_files(rows, data_dir, manifest)
        items = [(r["path"], r["label"]) for r in rows]
        report = check_items(data_dir, items, str(manifest), near_duplicate_bits, cache_dir=cache_dir)
        split_of = {r["path"]: r["split"] for r in rows}
        held_out = [p for p in report.excluded if split_of.get(p.path, "train") != "train"]
        if held_out:
            raise DataCheckError(
                f"{len(held_out)} val/test images of the split manifest {manifest} cannot be used: "
                + "; ".join(f"{p.path}: {p.message}" for p in held_out[:10])
                + ". Metrics over fewer images than the split holds would be wrong: replace the files, or make a new "
                "split (fit without --data.manifest)."
            )
    else:
        report = check_folder(data_dir, near_duplicate_bits, cache_dir=cache_dir)
        removed = drop_excluded(report, exclude)
        if official_split:
            rows, official = apply_official_split(
                report.items, official_split, data.fold, report.group_of(), val_fraction, seed
            )
            report.problems += [
                Problem(rel, "not-in-split", f"not listed in the official split {official.name}: left out", "error")
                for rel in official.files_without_row
            ]
        else:
            rows = make_split(report.items, val_fraction, data.test_fraction, seed, report.group_of())
    report.excluded_by_request = removed
    return with_groups(rows, report.group_of()), report, official
