"""Walking a folder of class folders, and the user's lists of image files, folders and globs. Pure Python."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator
from pathlib import Path

from kvasir_mobileone.errors import UserError
from kvasir_mobileone.io import IMAGE_EXTENSIONS

SYSTEM_FILES = {".DS_Store", "Thumbs.db", "desktop.ini", "Icon\r"}
SYSTEM_DIRS = {"__MACOSX", ".git", ".ipynb_checkpoints", ".kvasir_cache"}


class DataError(UserError, ValueError):
    """Bad or missing input data; the message says which file and what to do."""


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def is_hidden(rel_parts: tuple[str, ...]) -> bool:
    return any(part in SYSTEM_DIRS or part.startswith(".") for part in rel_parts)


def require_dir(data_dir: str | Path) -> Path:
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(
            f"Data directory {root} does not exist. Run `kvasir download --dest data` for Kvasir v2, "
            f"`kvasir synth --dest {root}` for synthetic data, or point --data.data_dir at a folder of class folders."
        )
    return root


def class_folders(root: Path) -> tuple[list[Path], list[Path]]:
    """(class folders, hidden or system folders that are not classes), sorted by name."""
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    skipped = [p for p in folders if p.name.startswith((".", "__")) or p.name in SYSTEM_DIRS]
    return [p for p in folders if p not in skipped], skipped


def walk(data_dir: str | Path) -> Iterator[tuple[str, str, Path]]:
    """(path relative to data_dir, class name, path) of every entry under data_dir/<class>/, hidden ones included,
    in sorted order: the one walk that `check` (which reports what it skips) and `scan_image_folder` share."""
    root = require_dir(data_dir)
    for class_dir in class_folders(root)[0]:
        for path in sorted(class_dir.rglob("*")):
            yield path.relative_to(root).as_posix(), class_dir.name, path


def scan_image_folder(data_dir: str | Path) -> list[tuple[str, str]]:
    """(path relative to data_dir, class name) for every visible image file in data_dir/<class>/, sorted."""
    items = [
        (rel, label)
        for rel, label, path in walk(data_dir)
        if path.is_file() and is_image_file(path) and not is_hidden(Path(rel).parts)
    ]
    if not items:
        raise DataError(
            f"No images found in {data_dir}: expected one sub-folder per class holding image files "
            f"({', '.join(IMAGE_EXTENSIONS)})."
        )
    return items


def expand_inputs(inputs: list[str]) -> list[Path]:
    """Files as given, folders searched recursively for images, globs expanded; sorted, no duplicates."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found += [p for p in sorted(path.rglob("*")) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
        elif path.exists():
            found.append(path)
        else:
            matches = sorted(glob.glob(item, recursive=True))
            if not matches:
                raise DataError(f"{item} is not a file, a folder or a glob that matches anything.")
            found += [Path(m) for m in matches if Path(m).is_file()]
    return list(dict.fromkeys(found))


def default_num_workers() -> int:
    """Processes for reading images: one per CPU core this process may use, at most 8."""
    return min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1, 8)
