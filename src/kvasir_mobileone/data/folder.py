"""Walking a folder of class folders, and the user's lists of image files, folders and globs. Pure Python."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator
from dataclasses import dataclass
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
            f"`kvasir synth --dest {root}` for synthetic data, or point --data.data_dir (fit, cv) or --data_dir "
            "(other commands) at a folder of class folders."
        )
    return root


@dataclass(frozen=True)
class FolderLayout:
    """Where the classes of a data folder are. The class of an image is the name of the folder that holds it (the
    leaf folder): data/<class>/ (flat, Kvasir v2) or data/<group>/.../<class>/ (nested, HyperKvasir)."""

    root: Path
    classes: dict[str, Path]  # class name -> its folder, sorted by name
    skipped: list[Path]  # hidden or system folders, not classes
    empty: list[Path]  # leaf folders without images: not classes
    loose: list[Path]  # image files directly in the data folder, outside any class folder

    @property
    def kind(self) -> str:
        return "flat" if all(p.parent == self.root for p in self.classes.values()) else "nested"

    def describe(self) -> str:
        """One sentence naming the layout, for eda and check."""
        if self.kind == "flat":
            return f"flat layout: {len(self.classes)} class folders directly in {self.root}"
        depths = sorted({len(p.relative_to(self.root).parts) for p in self.classes.values()})
        return (
            f"nested layout: {len(self.classes)} class folders (the leaf folders holding images) "
            f"{'/'.join(map(str, depths))} levels below {self.root}"
        )


def is_system_dir(name: str) -> bool:
    return name.startswith((".", "__")) or name in SYSTEM_DIRS


def find_class_folders(data_dir: str | Path) -> FolderLayout:
    """The class folders of a data folder, at any depth: every folder that holds image files is a class, named after
    that folder. A folder holding both images and class folders, or two class folders of one name, is an error."""
    root = require_dir(data_dir)
    classes: dict[str, Path] = {}
    skipped, empty, loose = [], [], []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames.sort()
        skipped += [here / d for d in dirnames if is_system_dir(d)]
        dirnames[:] = [d for d in dirnames if not is_system_dir(d)]
        images = [f for f in sorted(filenames) if is_image_file(Path(f))]
        if here == root:
            loose += [here / f for f in images]
            continue
        if not images:
            if not dirnames:
                empty.append(here)
            continue
        holder = next((p for p in classes.values() if p in here.parents), None)
        if holder is not None:
            raise DataError(
                f"{holder} holds both images and the class folder {here.relative_to(root)}: is it a class or a "
                "group of classes? Move its images into a class folder of their own, or the sub-folder out of it."
            )
        if here.name in classes:
            raise DataError(
                f"Two class folders are named {here.name!r}: {classes[here.name]} and {here}. A class is its "
                "folder's name, so each must be unique; rename one."
            )
        classes[here.name] = here
    return FolderLayout(root, dict(sorted(classes.items())), skipped, empty, loose)


def walk(data_dir: str | Path, layout: FolderLayout | None = None) -> Iterator[tuple[str, str, Path]]:
    """(path relative to data_dir, class name, path) of every entry under each class folder, hidden ones included,
    in sorted order: the one walk that `check` (which reports what it skips) and `scan_image_folder` share."""
    layout = layout or find_class_folders(data_dir)
    for name, class_dir in layout.classes.items():
        for path in sorted(class_dir.rglob("*")):
            yield path.relative_to(layout.root).as_posix(), name, path


def scan_image_folder(data_dir: str | Path) -> list[tuple[str, str]]:
    """(path relative to data_dir, class name) for every visible image file of every class folder, sorted."""
    items = [
        (rel, label)
        for rel, label, path in walk(data_dir)
        if path.is_file() and is_image_file(path) and not is_hidden(Path(rel).parts)
    ]
    if not items:
        raise DataError(
            f"No images found in {data_dir}: expected one sub-folder per class holding image files "
            f"({', '.join(IMAGE_EXTENSIONS)}), at any depth (the class is the folder that holds the images)."
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
