"""The images of a split manifest as a torch Dataset, and the LightningDataModule that batches them.

Every image the split assigns is used or accounted for: an unreadable training image is skipped and reported
(the batch carries its path and reason to the main process); an unreadable validation or test image stops the
command with the file named, because a metric over fewer images than the manifest claims would be wrong."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from kvasir_mobileone.data.cache import ImageCache, build_cache
from kvasir_mobileone.data.folder import DataError, default_num_workers
from kvasir_mobileone.data.split import class_names_of
from kvasir_mobileone.data.transforms import Normalization, device_augmentations, normalize, train_augmentations
from kvasir_mobileone.images import black_out, decode_resized


@dataclass(frozen=True)
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
        mask_regions: regions blacked out of every image in training, evaluation and prediction, so that the
            model cannot read them: names (bottom-left-box, top-left-text, left-strip, right-strip,
            black-corners) or name:x0,y0,x1,y1 boxes in relative coordinates
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
    mask_regions: list[str] | None = None


class Unreadable(NamedTuple):
    """A training image that could not be read: skipped, and reported with its reason."""

    path: str
    reason: str


class ImageListDataset(Dataset):
    """Images named by manifest rows, as (uint8 CHW tensor at size x size, class index, row index).

    Pixels come from the decode-once cache when one is given, else from decoding the file the same way. With
    skip_unreadable an unreadable file yields an Unreadable marker (collate drops it and reports it); without, it
    raises DataError naming the file."""

    def __init__(self, rows, data_dir, class_names, size: int, interpolation="bilinear", augment=None,
                 cache: ImageCache | None = None, skip_unreadable: bool = False, mask=()):  # fmt: skip
        self.rows = rows
        self.data_dir = Path(data_dir)
        self.class_index = {c: i for i, c in enumerate(class_names)}
        self.size, self.interpolation = size, interpolation
        self.augment = augment
        self.cache = cache
        self.skip_unreadable = skip_unreadable
        self.mask = mask  # boxes blacked out of every image (--data.mask_regions)

    def __len__(self) -> int:
        return len(self.rows)

    def pixels(self, rel_path: str) -> np.ndarray:
        cached = self.cache.get(rel_path) if self.cache is not None else None
        return cached if cached is not None else decode_resized(self.data_dir / rel_path, self.size, self.interpolation)

    def __getitem__(self, i: int):
        row = self.rows[i]
        try:
            image = torch.from_numpy(black_out(self.pixels(row["path"]), self.mask)).permute(2, 0, 1)
        except Exception as err:  # any decoding failure: the file is named, never silently replaced
            reason = f"{type(err).__name__}: {err}"
            if self.skip_unreadable:
                return Unreadable(row["path"], reason)
            raise DataError(
                f"Cannot read {self.data_dir / row['path']} ({reason}), a {row['split']} image of the split: the "
                "metrics would cover fewer images than the split holds. Replace or delete the file and make a new "
                "split (fit without --data.manifest); `kvasir check` lists every unreadable file."
            ) from err
        if self.augment is not None:
            image = self.augment(image)
        return image, self.class_index[row["label"]], i


def collate_reporting_unreadable(samples: list):
    """default_collate over the readable samples; the unreadable ones travel with the batch as (path, reason)."""
    readable = [s for s in samples if not isinstance(s, Unreadable)]
    skipped = [tuple(s) for s in samples if isinstance(s, Unreadable)]
    if not readable:
        empty = torch.empty(0, dtype=torch.long)
        return torch.empty(0, dtype=torch.uint8), empty, empty, skipped
    images, targets, indices = default_collate(readable)
    return images, targets, indices, skipped


class ImageFolderDataModule(L.LightningDataModule):
    """Train/val/test loaders over the rows of a split manifest. Batches leave the workers as uint8 (4x less to
    copy) and are normalized, and with augment_on=device also augmented, on the accelerator.

    `skipped` maps each training image that could not be read to its reason."""

    def __init__(self, cfg: DataConfig, rows: list[dict[str, str]], norm: Normalization):
        super().__init__()
        self.cfg = cfg
        self.rows = rows
        self.norm = norm
        self.class_names = class_names_of(rows)
        self.num_workers = default_num_workers() if cfg.num_workers is None else cfg.num_workers
        on_gpu = torch.cuda.is_available()
        self.augment_on = ("device" if on_gpu else "workers") if cfg.augment_on == "auto" else cfg.augment_on
        self.use_cache = cfg.cache
        self.cache: ImageCache | None = None
        self.skipped: dict[str, str] = {}
        self._device_augment = None

    def prepare_data(self) -> None:
        """Build the decode-once cache (rank 0 of each node only; the other ranks wait, then open it)."""
        if self.use_cache:
            self._open_cache()

    def setup(self, stage: str | None = None) -> None:
        if self.use_cache and self.cache is None:
            self._open_cache()

    def _open_cache(self) -> None:
        paths = [r["path"] for r in self.rows]
        try:
            self.cache = build_cache(
                self.cfg.data_dir, paths, self.norm.image_size, self.norm.interpolation, self.cfg.cache_dir
            )
        except OSError as err:  # e.g. a read-only dataset folder: train without the cache, say so
            warnings.warn(
                f"No image cache ({err}); decoding every image each epoch. Set --data.cache_dir.", stacklevel=2
            )
            self.use_cache = False
            return
        if self.cache.errors:
            listing = "; ".join(f"{p}: {e}" for p, e in list(self.cache.errors.items())[:5])
            warnings.warn(
                f"{len(self.cache.errors)} images of the split could not be decoded into the cache ({listing}). "
                "Training skips and reports them; evaluation stops on them.",
                stacklevel=2,
            )

    def dataset(self, split: str | None) -> ImageListDataset:
        """One split's images, or every image of the manifest with split=None; augmented only for train.
        Only training skips unreadable images; every other use needs every image."""
        rows = [r for r in self.rows if split is None or r["split"] == split]
        augment = train_augmentations() if split == "train" and self.augment_on == "workers" else None
        return ImageListDataset(rows, self.cfg.data_dir, self.class_names, self.norm.image_size,
                                self.norm.interpolation, augment, self.cache,
                                skip_unreadable=split == "train", mask=self.norm.mask)  # fmt: skip

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        images, targets, indices, skipped = batch
        for path, reason in skipped:
            self.skipped[path] = reason
        if images.numel() and self.trainer is not None and self.trainer.training and self.augment_on == "device":
            if self._device_augment is None:
                self._device_augment = device_augmentations().to(images.device)
            images = self._device_augment(images.float() / 255.0)
        return normalize(images, self.norm) if images.numel() else images, targets, indices

    def loader(self, split: str | None, shuffle: bool = False, batch_size: int | None = None) -> DataLoader:
        dataset = self.dataset(split)
        batch_size = batch_size or self.cfg.batch_size
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            # BatchNorm cannot train on a last batch of one image
            drop_last=shuffle and len(dataset) > batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            collate_fn=collate_reporting_unreadable,
        )

    def train_dataloader(self) -> DataLoader:
        return self.loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader("val")

    def test_dataloader(self) -> DataLoader:
        return self.loader("test")
