"""A decode-once cache: every image resized to SIZE x SIZE (JPEG DCT-scaled decode + Pillow resize) in one uint8
memory-mapped array, keyed to each source file's size and modification time so that a stale cache is rebuilt.

Decoding Kvasir's 720x576-1920x1072 JPEGs is the main CPU cost of training; reading a 224x224 uint8 image from a
memory map costs almost nothing, so 2 CPU cores can feed a GPU.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from kvasir_mobileone.data.folder import default_num_workers
from kvasir_mobileone.images import decode_resized
from kvasir_mobileone.io import write_json

CACHE_VERSION = 2
CACHE_DIR_NAME = ".kvasir_cache"  # inside the data folder by default; hidden, so scans and checks skip it


def stamp(path: Path) -> list[int]:
    info = path.stat()
    return [info.st_size, info.st_mtime_ns]


def cache_paths(cache_dir: Path, size: int) -> tuple[Path, Path]:
    return cache_dir / f"images_{size}px.u8", cache_dir / f"index_{size}px.json"


class ImageCache:
    """Read-only view of a built cache: relative path -> size x size x 3 uint8 array."""

    def __init__(self, cache_dir: Path, size: int):
        array_path, index_path = cache_paths(cache_dir, size)
        index = json.loads(index_path.read_text())
        self.size = size
        self.position = {p: i for i, p in enumerate(index["paths"])}
        self.errors: dict[str, str] = index.get("errors", {})  # path -> why it could not be decoded
        self.valid = [p not in self.errors for p in index["paths"]]
        self._array_path, self._count = array_path, len(index["paths"])
        self._array: np.memmap | None = None  # opened lazily, in each DataLoader worker

    def get(self, rel_path: str) -> np.ndarray | None:
        i = self.position.get(rel_path)
        if i is None or not self.valid[i]:
            return None
        if self._array is None:
            self._array = np.memmap(self._array_path, np.uint8, "r", shape=(self._count, self.size, self.size, 3))
        return np.array(self._array[i])

    def __getstate__(self):  # workers reopen the memory map themselves
        return self.__dict__ | {"_array": None}


def is_fresh(data_dir: Path, rel_paths: list[str], cache_dir: Path, size: int, interpolation: str) -> bool:
    """The cache exists, was made the same way and holds every path with an unchanged size and mtime."""
    array_path, index_path = cache_paths(cache_dir, size)
    if not (array_path.is_file() and index_path.is_file()):
        return False
    index = json.loads(index_path.read_text())
    if index.get("version") != CACHE_VERSION or index.get("interpolation") != interpolation:
        return False
    known = dict(zip(index["paths"], map(tuple, index["stamps"]), strict=True))
    return all(known.get(rel) == tuple(stamp(data_dir / rel)) for rel in rel_paths)


def _fill(job: tuple[str, str, int, int, list[str], str, int]) -> list[str | None]:
    """Decode one chunk into the memory map; per image None, or the reason it could not be decoded."""
    array_path, data_dir, size, count, chunk, interpolation, start = job
    array = np.memmap(array_path, np.uint8, "r+", shape=(count, size, size, 3))
    errors: list[str | None] = []
    for offset, rel in enumerate(chunk):
        try:
            array[start + offset] = decode_resized(Path(data_dir) / rel, size, interpolation)
            errors.append(None)
        except Exception as err:  # recorded with its reason; the dataset then reports the file as unreadable
            errors.append(f"{type(err).__name__}: {err}")
    array.flush()
    return errors


def build_cache(
    data_dir: str | Path,
    rel_paths: list[str],
    size: int,
    interpolation: str = "bilinear",
    cache_dir: str | Path | None = None,
    workers: int | None = None,
) -> ImageCache:
    """Open the cache for these images, (re)building it first when missing or stale. Written to temporary files
    and renamed into place, so a killed build never leaves a cache that looks complete."""
    data_dir = Path(data_dir)
    cache_dir = Path(cache_dir) if cache_dir else data_dir / CACHE_DIR_NAME
    rel_paths = sorted(set(rel_paths))
    if is_fresh(data_dir, rel_paths, cache_dir, size, interpolation):
        return ImageCache(cache_dir, size)
    cache_dir.mkdir(parents=True, exist_ok=True)
    array_path, index_path = cache_paths(cache_dir, size)
    tmp_array = array_path.with_name(array_path.name + f".{os.getpid()}.tmp")
    # stamps taken before decoding: a file changed during the build then looks stale, not fresh
    stamps = [stamp(data_dir / rel) for rel in rel_paths]
    np.memmap(tmp_array, np.uint8, "w+", shape=(len(rel_paths), size, size, 3)).flush()
    chunk = 64
    jobs = [
        (str(tmp_array), str(data_dir), size, len(rel_paths), rel_paths[i : i + chunk], interpolation, i)
        for i in range(0, len(rel_paths), chunk)
    ]
    workers = default_num_workers() if workers is None else workers
    bar = tqdm(total=len(rel_paths), desc=f"cache {size}px -> {cache_dir}", unit="img")
    errors: list[str | None] = []
    try:
        if workers > 1 and len(jobs) > 1:
            with ProcessPoolExecutor(workers) as pool:
                for chunk_errors in pool.map(_fill, jobs):
                    errors += chunk_errors
                    bar.update(len(chunk_errors))
        else:
            for job in jobs:
                errors += _fill(job)
                bar.update(len(job[4]))
        bar.close()
        os.replace(tmp_array, array_path)
    finally:
        tmp_array.unlink(missing_ok=True)
    index = {
        "version": CACHE_VERSION,
        "size": size,
        "interpolation": interpolation,
        "paths": rel_paths,
        "stamps": stamps,
        "errors": {rel: e for rel, e in zip(rel_paths, errors, strict=True) if e},
    }
    write_json(index_path, index)  # written last: the array is complete before an index points at it
    return ImageCache(cache_dir, size)
