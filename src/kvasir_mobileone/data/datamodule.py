"""The images of a split manifest as a torch Dataset, and the LightningDataModule that batches them.

Every image the split assigns is used or accounted for: an unreadable training image is skipped and reported
(the batch carries its path and reason to the main process); an unreadable validation or test image stops the
command with the file named, because a metric over fewer images than the manifest claims would be wrong."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, WeightedRandomSampler, default_collate

from kvasir_mobileone.data.batch_augment import BatchAugment
from kvasir_mobileone.data.cache import ImageCache, build_cache
from kvasir_mobileone.data.config import DataConfig
from kvasir_mobileone.data.folder import DataError, default_num_workers
from kvasir_mobileone.data.frame import swap_frame
from kvasir_mobileone.data.resident import ImageBank, ResidentBatches
from kvasir_mobileone.data.split import class_names_of
from kvasir_mobileone.data.transforms import device_augmentations, normalize, train_augmentations
from kvasir_mobileone.images import ModelInput, decode_resized

# progress notes below the commands layer; `kvasir` shows them on stdout (cli.show_notes)
log = logging.getLogger(__name__)

# Images per step when --data.batch_size is not given: the original workflow's 32 on a CPU; on a GPU 256, where
# batches of 32 leave most of the chip idle (README, GPU speed). The learning rate follows (--model.lr_scaling).
CPU_BATCH_SIZE = 32
GPU_BATCH_SIZE = 256


def default_batch_size(gpu: bool | None = None) -> int:
    """The batch size when none is given: for training on a GPU (default: when CUDA is visible) or on a CPU."""
    return GPU_BATCH_SIZE if (torch.cuda.is_available() if gpu is None else gpu) else CPU_BATCH_SIZE


def balanced_sampling_weights(labels: list[str]) -> torch.Tensor:
    """Each image's probability of being drawn for --data.sampler balanced: 1 / (classes x its class's count)."""
    counts: dict[str, int] = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    return torch.tensor([1.0 / (len(counts) * counts[label]) for label in labels], dtype=torch.double)


def auto_loader(data: DataConfig, devices: int | None = None) -> str:
    """--data.loader auto made explicit: resident when training on one GPU with the cache, else workers."""
    if data.loader != "auto":
        return data.loader
    if data.frame_swap or data.clean_frame != "none" or data.augment != "standard" or data.unlabeled_dir:
        return "workers"  # pasting another image's frame, inpainting, RandAugment, unlabeled frames: a worker's job
    devices = torch.cuda.device_count() if devices is None else devices
    return "resident" if torch.cuda.is_available() and data.cache and devices == 1 else "workers"


def unreadable_error(path: Path, reason: str, split: str) -> DataError:
    return DataError(
        f"Cannot read {path} ({reason}), a {split} image of the split: the metrics would cover fewer images than "
        "the split holds. Replace or delete the file and make a new split (fit without --data.manifest); "
        "`kvasir check` lists every unreadable file."
    )


class Unreadable(NamedTuple):
    """A training image that could not be read: skipped, and reported with its reason."""

    path: str
    reason: str


class ImageListDataset(Dataset):
    """Images named by manifest rows, as (uint8 CHW tensor at size x size, class index, row index).

    Pixels come from the decode-once cache when one is given, else from decoding the file the same way. With
    skip_unreadable an unreadable file yields an Unreadable marker (collate drops it and reports it); without, it
    raises DataError naming the file."""

    def __init__(
        self,
        rows,
        data_dir,
        class_names,
        size: int,
        interpolation="bilinear",
        augment=None,
        cache: ImageCache | None = None,
        skip_unreadable: bool = False,
        prepare: Callable[[np.ndarray], np.ndarray] | None = None,
        frame_swap: float = 0.0,
    ):
        self.rows = rows
        self.data_dir = Path(data_dir)
        self.class_index = {c: i for i, c in enumerate(class_names)}
        self.size, self.interpolation = size, interpolation
        self.augment = augment
        self.cache = cache
        self.skip_unreadable = skip_unreadable
        # the model input's last steps (ModelInput.prepare): clean-up, then the hidden pixels black
        self.prepare = prepare
        self.frame_swap = frame_swap  # --data.frame_swap: the chance an image takes another's frame and overlays

    def __len__(self) -> int:
        return len(self.rows)

    def pixels(self, rel_path: str) -> np.ndarray:
        cached = self.cache.get(rel_path) if self.cache is not None else None
        return cached if cached is not None else decode_resized(self.data_dir / rel_path, self.size, self.interpolation)

    def with_frame_of_another(self, pixels: np.ndarray) -> np.ndarray:
        """The image under the frame and overlays of another image of the split, drawn at random (torch's RNG:
        seeded per worker): trained on many such, the model learns that frames carry nothing. A donor that cannot
        be read leaves the image as it is (the donor is reported when its own turn comes)."""
        j = int(torch.randint(len(self.rows), ()))
        try:
            donor = self.pixels(self.rows[j]["path"])
        except Exception:  # named when the donor itself is loaded
            return pixels
        return swap_frame(pixels, donor)

    def __getitem__(self, i: int):
        row = self.rows[i]
        try:
            pixels = self.pixels(row["path"])
            if self.frame_swap and float(torch.rand(())) < self.frame_swap:
                pixels = self.with_frame_of_another(pixels)
            image = torch.from_numpy(self.prepare(pixels) if self.prepare else pixels).permute(2, 0, 1)
        except Exception as err:  # any decoding failure: the file is named, never silently replaced
            reason = f"{type(err).__name__}: {err}"
            if self.skip_unreadable:
                return Unreadable(row["path"], reason)
            raise unreadable_error(self.data_dir / row["path"], reason, row["split"]) from err
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


class WithoutRepeats(Sampler):
    """`count` indices into `size` items, drawn without repeats until each has been drawn, then again. Not a
    RandomSampler: under DDP Lightning would replace that with a DistributedSampler over the whole folder (an epoch
    as long as the unlabeled frames); this one it wraps, keeping the count, split between the ranks."""

    def __init__(self, size: int, count: int, seed: int):
        self.size, self.count = size, count
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return self.count

    def __iter__(self):
        drawn = 0
        while drawn < self.count:
            order = torch.randperm(self.size, generator=self.generator)[: self.count - drawn].tolist()
            drawn += len(order)
            yield from order


class ImageFolderDataModule(L.LightningDataModule):
    """Train/val/test loaders over the rows of a split manifest. Batches arrive on the accelerator as uint8 (4x less
    to copy) and are normalized there, and with augment_on=device also augmented there.

    With loader=resident the images live on the GPU (ImageBank) and batches never leave it; otherwise DataLoader
    workers read them from the cache or the files. `skipped` maps each training image that could not be read to
    its reason."""

    def __init__(
        self,
        data: DataConfig,
        rows: list[dict[str, str]],
        model_input: ModelInput,
        seed: int | None = None,
        evaluate: str = "test",
        class_names: list[str] | None = None,
    ):
        """`seed`: the training seed, which orders the resident batches (default: torch's current seed, which
        `fit` sets from --trainer.seed). `evaluate`: the split that trainer.test and trainer.predict go through
        (`kvasir test --calibrate` and the uncertainty's passes evaluate val and train). `class_names`: the model's,
        when `rows` are a part of the manifest that may lack a class (default: the classes of `rows`)."""
        super().__init__()
        self.evaluate = evaluate
        self.train_seed = torch.initial_seed() if seed is None else seed
        self.data = data
        self.rows = rows
        self.model_input = model_input
        self.class_names = list(class_names) if class_names else class_names_of(rows)
        self.num_workers = default_num_workers() if data.num_workers is None else data.num_workers
        self.batch_size = data.batch_size or default_batch_size()
        on_gpu = torch.cuda.is_available()
        # a checkpoint's clean-up runs in the workers, whatever the config says
        self.loader_kind = "workers" if model_input.clean and data.loader == "auto" else auto_loader(data)
        policy = data.augment != "standard"  # RandAugment, TrivialAugment: torchvision's, on uint8 images in workers
        auto_on = "device" if on_gpu and not policy else "workers"
        self.augment_on = auto_on if data.augment_on == "auto" else data.augment_on
        if policy and (self.augment_on != "workers" or self.loader_kind == "resident"):
            raise DataError(
                f"--data.augment {data.augment} runs in the DataLoader workers: the GPU batch augmentation "
                "(--data.augment_on device or kornia, and the resident loader) offers only standard. Use "
                "--data.loader workers --data.augment_on workers, or --data.augment standard."
            )
        if data.unlabeled_dir and self.loader_kind == "resident":
            raise DataError("--data.unlabeled_dir reads its frames in the loader's workers: use --data.loader workers.")
        self.unlabeled = None  # data/unlabeled.UnlabeledFrames, set by fit (commands/fit.attach_recipe)
        if not 0 <= data.frame_swap <= 1:
            raise DataError(f"--data.frame_swap {data.frame_swap}: give a probability between 0 and 1, e.g. 0.5.")
        if self.loader_kind == "resident" and data.frame_swap:
            raise DataError("--data.frame_swap pastes frames in the loader's workers: use --data.loader workers.")
        if self.loader_kind == "resident" and model_input.clean:
            raise DataError("--data.clean_frame inpaints in the loader's workers: use --data.loader workers.")
        if self.loader_kind == "resident" and self.augment_on == "workers":
            self.augment_on = "device"  # resident batches never pass through a worker
        self.use_cache = data.cache or self.loader_kind == "resident"
        self.cache: ImageCache | None = None
        self.bank: ImageBank | None = None
        self.skipped: dict[str, str] = {}
        self._device_augment = None

    def prepare_data(self) -> None:
        """Build the decode-once cache (rank 0 of each node only; the other ranks wait, then open it)."""
        if self.use_cache:
            self._open_cache()

    def setup(self, stage: str | None = None) -> None:
        if self.use_cache and self.cache is None:
            self._open_cache()
        if self.loader_kind == "resident" and self.trainer is not None and self.trainer.world_size > 1:
            raise DataError("--data.loader resident feeds one device; with several use --data.loader workers.")
        if self.loader_kind == "resident" and self.bank is None:
            self._load_bank()

    def _open_cache(self) -> None:
        paths = [r["path"] for r in self.rows]
        try:
            self.cache = build_cache(
                self.data.data_dir,
                paths,
                self.model_input.image_size,
                self.model_input.interpolation,
                self.data.cache_dir,
            )
        except OSError as err:  # e.g. a read-only dataset folder: train without the cache, say so
            fallback = " and without the GPU-resident loader" if self.loader_kind == "resident" else ""
            warnings.warn(
                f"No image cache ({err}); decoding every image each epoch{fallback}. Set --data.cache_dir.",
                stacklevel=2,
            )
            self.use_cache, self.loader_kind = False, "workers"
            return
        if self.cache.errors:
            listing = "; ".join(f"{p}: {e}" for p, e in list(self.cache.errors.items())[:5])
            warnings.warn(
                f"{len(self.cache.errors)} images of the split could not be decoded into the cache ({listing}). "
                "Training skips and reports them; evaluation stops on them.",
                stacklevel=2,
            )

    @property
    def device(self) -> torch.device:
        if self.trainer is not None:
            return self.trainer.strategy.root_device
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def dataset(self, split: str | None, training: bool | None = None) -> ImageListDataset:
        """One split's images, or every image of the manifest with split=None; augmented only for training (the
        train split, unless `training` says otherwise). Only training skips unreadable images; every other use
        needs every image."""
        training = split == "train" if training is None else training
        rows = [r for r in self.rows if split is None or r["split"] == split]
        augment = train_augmentations(self.data.augment) if training and self.augment_on == "workers" else None
        return ImageListDataset(
            rows,
            self.data.data_dir,
            self.class_names,
            self.model_input.image_size,
            self.model_input.interpolation,
            augment,
            self.cache,
            skip_unreadable=training,
            prepare=self.model_input.prepare,
            frame_swap=self.data.frame_swap if training else 0.0,
        )

    def _load_bank(self) -> None:
        if self.cache is None:
            self._open_cache()
        class_index = {c: i for i, c in enumerate(self.class_names)}
        self.bank = ImageBank.load(self.cache, self.rows, class_index, self.device, self.model_input.hidden())
        log.info(
            f"{len(self.rows)} images at {self.model_input.image_size} px held in {self.bank.where} memory "
            f"({self.bank.nbytes / 2**30:.2f} GiB) for --data.loader resident."
        )

    def resident(
        self, split: str | None, shuffle: bool = False, batch_size: int | None = None, training: bool | None = None
    ) -> ResidentBatches:
        """One split's images as batches gathered from the ImageBank (loaded on first use). Training skips and
        reports the images the cache could not decode; any other split stops on them, naming the file."""
        if self.bank is None:
            self._load_bank()
        training = split == "train" if training is None else training
        members = []
        for k, row in enumerate(self.rows):
            if split is not None and row["split"] != split:
                continue
            if not self.bank.valid[k]:
                reason = self.cache.errors.get(row["path"], "not in the cache")
                if not training:
                    raise unreadable_error(Path(self.data.data_dir) / row["path"], reason, row["split"])
                self.skipped[row["path"]] = reason
                continue
            members.append(k)
        batch_size = batch_size or self.batch_size
        seed = self.train_seed + (self.trainer.global_rank if self.trainer is not None else 0)
        epoch = (lambda: self.trainer.current_epoch) if self.trainer is not None else None
        balanced = shuffle and self.data.sampler == "balanced"
        return ResidentBatches(
            self.bank,
            members,
            batch_size,
            shuffle,
            drop_last=shuffle and len(members) > batch_size,
            seed=seed,
            epoch_source=epoch,
            weights=balanced_sampling_weights([self.rows[k]["label"] for k in members]) if balanced else None,
        )

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        if isinstance(batch, dict):  # training with unlabeled frames: {"labeled": ..., "unlabeled": ...}
            return {k: self.on_after_batch_transfer(v, dataloader_idx) for k, v in batch.items()}
        images, targets, indices, skipped = batch
        for path, reason in skipped:
            self.skipped[path] = reason
        training = self.trainer is not None and self.trainer.training
        if images.numel() and training and self.augment_on in ("device", "kornia"):
            if self._device_augment is None:
                augment = BatchAugment() if self.augment_on == "device" else device_augmentations()
                self._device_augment = augment.to(images.device)
            images = self._device_augment(images.float() / 255.0)
        return normalize(images, self.model_input) if images.numel() else images, targets, indices

    def loader(
        self, split: str | None, shuffle: bool = False, batch_size: int | None = None, training: bool | None = None
    ):
        """A split's batches: a DataLoader over workers, or ResidentBatches with loader=resident. `training`: as
        dataset() says."""
        if self.loader_kind == "resident":
            return self.resident(split, shuffle, batch_size, training)
        dataset = self.dataset(split, training)
        batch_size = batch_size or self.batch_size
        sampler = None
        if shuffle and self.data.sampler == "balanced":
            generator = torch.Generator().manual_seed(self.train_seed)
            weights = balanced_sampling_weights([r["label"] for r in dataset.rows])
            sampler = WeightedRandomSampler(weights, len(dataset), replacement=True, generator=generator)
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle and sampler is None,
            sampler=sampler,
            # BatchNorm cannot train on a last batch of one image
            drop_last=shuffle and len(dataset) > batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            collate_fn=collate_reporting_unreadable,
        )

    def unlabeled_loader(self, batches: int) -> DataLoader:
        """The unlabeled frames, `batches` batches of them (as many as the labeled loader gives), drawn without
        repeats until each has been seen, augmented as the training images (in the workers, or on the device in
        on_after_batch_transfer); unreadable ones reported."""
        from kvasir_mobileone.data.unlabeled import UNLABELED_LABEL

        frames = self.unlabeled
        dataset = ImageListDataset(
            frames.rows,
            frames.folder,
            [UNLABELED_LABEL],
            self.model_input.image_size,
            self.model_input.interpolation,
            train_augmentations(self.data.augment) if self.augment_on == "workers" else None,
            None,
            skip_unreadable=True,
            prepare=self.model_input.prepare,
        )
        sampler = WithoutRepeats(len(dataset), batches * self.batch_size, self.train_seed + 1)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            drop_last=True,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            collate_fn=collate_reporting_unreadable,
        )

    def train_dataloader(self):
        labeled = self.loader("train", shuffle=True)
        if self.unlabeled is None:
            return labeled
        return {"labeled": labeled, "unlabeled": self.unlabeled_loader(len(labeled))}

    def val_dataloader(self):
        return self.loader("val")

    def test_dataloader(self):
        return self.loader(self.evaluate, training=False)

    def predict_dataloader(self):
        """The `evaluate` split's rows, unaugmented, every one of them."""
        return self.loader(self.evaluate, training=False)
