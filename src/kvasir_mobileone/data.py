"""Folder-per-class images -> stratified split manifest -> transforms -> LightningDataModule."""

from __future__ import annotations

import os
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import lightning as L
import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2 as T

from kvasir_mobileone.images import decode_resized
from kvasir_mobileone.io import IMAGE_EXTENSIONS, read_csv, write_csv

SPLITS = ("train", "val", "test")
MANIFEST_HEADER = ("path", "label", "split")


class DataError(ValueError):
    """Bad or missing input data; the message says which file and what to do."""


@dataclass
class DataConfig:
    """Where the images are, how they are split and how they are batched.

    Args:
        data_dir: a folder of class folders (Kvasir v2: data/kvasir-dataset-v2)
        manifest: reuse this split manifest CSV so the test set stays fixed across runs
        val_fraction: share of the images in the validation split
        test_fraction: share of the images in the test split
        seed: seed of the split
        batch_size: images per batch (per device)
        num_workers: None: one per CPU core, at most 8
        image_size: None: the backbone's input size from timm's data config
        near_duplicate_bits: images whose 64-bit perceptual hashes differ in <= this many bits share a split
        cache: decode each image once into DATA/.kvasir_cache (uint8 memory map), rebuilt when stale
        cache_dir: where the cache goes when the data folder is read-only
        augment_on: auto: on the GPU when there is one, else in workers
    """

    data_dir: str = "data/kvasir-dataset-v2"
    manifest: str | None = None
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    seed: int = 42
    batch_size: int = 32
    num_workers: int | None = None
    image_size: int | None = None
    near_duplicate_bits: int = 2
    cache: bool = True
    cache_dir: str | None = None
    augment_on: Literal["auto", "workers", "device"] = "auto"


@dataclass(frozen=True)
class Normalization:
    """What the backbone expects; comes from timm's data config, never typed by hand."""

    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def require_dir(data_dir: str | Path) -> Path:
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(
            f"Data directory {root} does not exist. Run `kvasir download --dest data` for Kvasir v2, "
            f"`kvasir synth --dest {root}` for synthetic data, or point --data.data_dir at a folder of class folders."
        )
    return root


def scan_image_folder(data_dir: str | Path) -> list[tuple[str, str]]:
    """(path relative to data_dir, class name) for every image in data_dir/<class>/, sorted."""
    root = require_dir(data_dir)
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "__")))
    items = [
        (path.relative_to(root).as_posix(), class_dir.name)
        for class_dir in class_dirs
        for path in sorted(class_dir.rglob("*"))
        if path.is_file() and is_image_file(path)
    ]
    if not items:
        raise DataError(
            f"No images found in {root}: expected one sub-folder per class holding image files "
            f"({', '.join(IMAGE_EXTENSIONS)})."
        )
    return items


def make_split(
    items: list[tuple[str, str]],
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 42,
    groups: dict[str, int] | None = None,
) -> list[dict[str, str]]:
    """Stratified train/val/test split of (path, label) items; the same seed gives the same split.

    Items sharing a group (duplicates, near-duplicates) always land in the same split, so the test set cannot
    hold a copy of a training image: the split is drawn over one representative per group."""
    groups = groups or {p: i for i, (p, _) in enumerate(items)}
    representative: dict[int, tuple[str, str]] = {}
    for path, label in items:
        representative.setdefault(groups[path], (path, label))
    keys = list(representative)
    labels = [representative[k][1] for k in keys]
    holdout = val_fraction + test_fraction
    try:
        train_k, rest_k, _, rest_y = train_test_split(
            keys, labels, test_size=holdout, stratify=labels, random_state=seed
        )
        val_k, test_k = train_test_split(rest_k, test_size=test_fraction / holdout, stratify=rest_y, random_state=seed)
    except ValueError as err:
        smallest = min(Counter(labels).items(), key=lambda kv: kv[1])
        raise DataError(
            f"Cannot make a stratified {1 - holdout:.0%}/{val_fraction:.0%}/{test_fraction:.0%} split: class "
            f"{smallest[0]!r} has only {smallest[1]} distinct images ({err}). Add images, merge the class, or "
            "change --data.val_fraction/--data.test_fraction."
        ) from err
    split_of_group = {k: "train" for k in train_k} | {k: "val" for k in val_k} | {k: "test" for k in test_k}
    return [{"path": p, "label": c, "split": split_of_group[groups[p]]} for p, c in items]


def write_manifest(path: str | Path, rows: list[dict[str, str]]) -> Path:
    return write_csv(path, MANIFEST_HEADER, [[r[k] for k in MANIFEST_HEADER] for r in rows])


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
            f"{', '.join(missing[:5])}. Restore them, point the data folder option (fit: --data.data_dir, test: "
            "--data_dir) at the right folder, or make a new split (fit without --data.manifest)."
        )


def class_names_of(rows: list[dict[str, str]]) -> list[str]:
    return sorted({r["label"] for r in rows})


def split_counts(rows: list[dict[str, str]]) -> dict[str, dict[str, int]]:
    """{split: {class: count}} for every split and class, zeros included."""
    counts = Counter((r["split"], r["label"]) for r in rows)
    return {s: {c: counts[(s, c)] for c in class_names_of(rows)} for s in SPLITS}


def train_augmentations() -> T.Compose:
    """The original workflow's augmentations, on uint8 CHW tensors in DataLoader workers: rotation, flips, jitter."""
    return T.Compose(
        [T.RandomRotation(15), T.RandomHorizontalFlip(), T.RandomVerticalFlip(), T.ColorJitter(0.2, 0.2, 0.2, 0.02)]
    )


def device_augmentations() -> torch.nn.Module:
    """The same augmentations for whole float batches on the accelerator, random per image (kornia)."""
    import kornia.augmentation as K

    return torch.nn.Sequential(
        K.RandomRotation(15.0, p=1.0),
        K.RandomHorizontalFlip(),
        K.RandomVerticalFlip(),
        K.ColorJitter(0.2, 0.2, 0.2, 0.02, p=1.0),
    )


def normalize(images: torch.Tensor, norm: Normalization) -> torch.Tensor:
    """uint8 (or [0, 1] float) NCHW batch -> float normalized with the backbone's mean/std, on its own device."""
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    mean = torch.tensor(norm.mean, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(norm.std, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


class ImageListDataset(Dataset):
    """Images named by manifest rows, as (uint8 CHW tensor at size x size, class index, row index).

    Pixels come from the decode-once cache when one is given, else from decoding the file the same way."""

    def __init__(self, rows, data_dir, class_names, size: int, interpolation="bilinear", augment=None, cache=None):
        self.rows = rows
        self.data_dir = Path(data_dir)
        self.class_index = {c: i for i, c in enumerate(class_names)}
        self.size, self.interpolation = size, interpolation
        self.augment = augment
        self.cache = cache

    def __len__(self) -> int:
        return len(self.rows)

    def pixels(self, rel_path: str) -> np.ndarray:
        cached = self.cache.get(rel_path) if self.cache is not None else None
        return cached if cached is not None else decode_resized(self.data_dir / rel_path, self.size, self.interpolation)

    def __getitem__(self, i: int):
        # A file that breaks after `kvasir check` passed it (changed on disk, flaky network drive) must not end
        # the epoch: say which, and serve the next image instead.
        for offset in range(len(self.rows)):
            index = (i + offset) % len(self.rows)
            row = self.rows[index]
            try:
                image = torch.from_numpy(self.pixels(row["path"])).permute(2, 0, 1)
            except Exception as err:
                message = f"Skipped unreadable {self.data_dir / row['path']} ({err}); served the next image."
                warnings.warn(message, stacklevel=2)
                continue
            if self.augment is not None:
                image = self.augment(image)
            return image, self.class_index[row["label"]], index
        raise DataError(f"No image of this split in {self.data_dir} could be read.")


def default_num_workers() -> int:
    return min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1, 8)


class ImageFolderDataModule(L.LightningDataModule):
    """Train/val/test loaders over the rows of a split manifest. Batches leave the workers as uint8 (4x less to
    copy) and are normalized, and with augment_on=device also augmented, on the accelerator."""

    def __init__(self, cfg: DataConfig, rows: list[dict[str, str]], norm: Normalization):
        super().__init__()
        self.cfg = cfg
        self.rows = rows
        self.norm = norm
        self.class_names = class_names_of(rows)
        self.num_workers = default_num_workers() if cfg.num_workers is None else cfg.num_workers
        on_gpu = torch.cuda.is_available()
        self.augment_on = ("device" if on_gpu else "workers") if cfg.augment_on == "auto" else cfg.augment_on
        self.cache = None
        self._device_augment = None

    def prepare_data(self) -> None:
        """Build the decode-once cache (rank 0 of each node only; the other ranks wait, then open it)."""
        if self.cfg.cache:
            self._open_cache()

    def setup(self, stage: str | None = None) -> None:
        if self.cfg.cache and self.cache is None:
            self._open_cache()

    def _open_cache(self) -> None:
        from kvasir_mobileone.cache import build_cache

        paths = [r["path"] for r in self.rows]
        try:
            self.cache = build_cache(
                self.cfg.data_dir, paths, self.norm.image_size, self.norm.interpolation, self.cfg.cache_dir
            )
        except OSError as err:  # e.g. a read-only dataset folder: train without the cache, say so
            warnings.warn(
                f"No image cache ({err}); decoding every image each epoch. Set --data.cache_dir.", stacklevel=2
            )
            self.cfg.cache = False

    def dataset(self, split: str | None) -> ImageListDataset:
        """One split's images, or every image of the manifest with split=None; augmented only for train."""
        rows = [r for r in self.rows if split is None or r["split"] == split]
        augment = train_augmentations() if split == "train" and self.augment_on == "workers" else None
        return ImageListDataset(rows, self.cfg.data_dir, self.class_names, self.norm.image_size,
                                self.norm.interpolation, augment, self.cache)  # fmt: skip

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        images, targets, indices = batch
        if self.trainer is not None and self.trainer.training and self.augment_on == "device":
            if self._device_augment is None:
                self._device_augment = device_augmentations().to(images.device)
            images = self._device_augment(images.float() / 255.0)
        return normalize(images, self.norm), targets, indices

    def _loader(self, split: str, shuffle: bool = False) -> DataLoader:
        dataset = self.dataset(split)
        return DataLoader(
            dataset,
            batch_size=self.cfg.batch_size,
            shuffle=shuffle,
            # BatchNorm cannot train on a last batch of one image
            drop_last=shuffle and len(dataset) > self.cfg.batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")
