"""The GPU-resident data path: the decode-once uint8 cache loaded once into GPU memory (Kvasir at 224 px is
1.2 GB), batches gathered on the GPU by index, so that no CPU work is done per image during training.

When the images do not fit beside training, they stay in pinned host memory and each batch is gathered there and
copied with a non-blocking transfer. On a machine without CUDA (the tests) they stay in ordinary host memory and
the same code runs on CPU tensors."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch

from kvasir_mobileone.data.cache import ImageCache

# Share of the GPU's free memory the images may take; the rest is for training (activations of a batch of 256
# at 224 px in bf16 take several GiB for MobileOne-S4).
DEVICE_SHARE = 0.4
CHUNK = 1024  # images copied per transfer while loading


def placement(image_bytes: int, device: torch.device, free_bytes: int | None = None) -> str:
    """Where the images go: 'device' when they fit in DEVICE_SHARE of the free GPU memory, else 'pinned' host
    memory; 'host' when the device is not a GPU."""
    if device.type != "cuda":
        return "host"
    if free_bytes is None:
        free_bytes = torch.cuda.mem_get_info(device)[0]
    return "device" if image_bytes <= DEVICE_SHARE * free_bytes else "pinned"


class ImageBank:
    """Every image of a split manifest as one N x H x W x 3 uint8 tensor (rows in manifest order), its class
    indices on the target device, and which rows the cache could not decode."""

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, valid: np.ndarray, device: torch.device):
        self.images, self.targets, self.valid, self.device = images, targets, valid, device
        self.where = "device" if images.device.type == "cuda" else ("pinned" if images.is_pinned() else "host")

    @classmethod
    def load(
        cls,
        cache: ImageCache,
        rows,
        class_index: dict[str, int],
        device: torch.device,
        hidden: np.ndarray | None = None,
        free_bytes: int | None = None,
    ) -> ImageBank:
        """Copy the rows' cached images to `device` (or pinned host memory when they do not fit), in chunks, with
        the hidden pixels (ModelInput.hidden) blacked out once here instead of in every batch."""
        size = cache.size
        count = len(rows)
        where = placement(count * size * size * 3, device, free_bytes)
        storage = device if where == "device" else torch.device("cpu")
        images = torch.empty((count, size, size, 3), dtype=torch.uint8, device=storage, pin_memory=where == "pinned")
        valid = np.zeros(count, bool)
        blank = np.zeros((size, size, 3), np.uint8)
        hidden = torch.from_numpy(hidden).to(storage) if hidden is not None else None
        for start in range(0, count, CHUNK):
            chunk_rows = rows[start : start + CHUNK]
            pixels = []
            for k, row in enumerate(chunk_rows):
                image = cache.get(row["path"])
                valid[start + k] = image is not None
                pixels.append(blank if image is None else image)
            chunk = torch.from_numpy(np.stack(pixels)).to(storage)
            if hidden is not None:
                chunk[:, hidden] = 0
            images[start : start + len(chunk_rows)] = chunk
        targets = torch.tensor([class_index[r["label"]] for r in rows], dtype=torch.long, device=device)
        return cls(images, targets, valid, device)

    @property
    def nbytes(self) -> int:
        return self.images.numel()


class ResidentBatches:
    """A DataLoader's role over an ImageBank: (uint8 N x 3 x H x W images, targets, positions among the batches'
    images, []) batches already on the device; for val and test (no unreadable image allowed) the positions are
    those within the split. Shuffled with a generator seeded by (seed, epoch) when `shuffle`, the epoch read from
    `epoch_source` (the trainer's current epoch) at each pass, so a resumed run continues the sequence. The last
    partial batch is dropped when `drop_last` (static shapes for torch.compile and CUDA graphs, and BatchNorm
    cannot train on a batch of one)."""

    def __init__(
        self,
        bank: ImageBank,
        members: list[int],
        batch_size: int,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        epoch_source: Callable[[], int] | None = None,
        weights: torch.Tensor | None = None,
    ):
        """`weights`: draw each epoch's positions with replacement with these probabilities (--data.sampler
        balanced) instead of a permutation."""
        self.bank = bank
        self.members = torch.tensor(members, dtype=torch.long)
        self.batch_size, self.shuffle, self.drop_last, self.seed = batch_size, shuffle, drop_last, seed
        self.epoch, self.epoch_source = 0, epoch_source
        self.weights = weights
        self._members_on_storage = self.members.to(bank.images.device)
        self._targets = bank.targets[self.members.to(bank.device)]  # class of each member, on the device

    def __len__(self) -> int:
        full, rest = divmod(len(self.members), self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    def order(self, epoch: int) -> torch.Tensor:
        """Positions within the split, in the order epoch `epoch` visits them."""
        if not self.shuffle:
            return torch.arange(len(self.members))
        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        if self.weights is not None:
            return torch.multinomial(self.weights, len(self.members), replacement=True, generator=generator)
        return torch.randperm(len(self.members), generator=generator)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, list]]:
        # No `sampler` attribute for Lightning's set_epoch: with one, Lightning takes this for a DataLoader
        if self.epoch_source is not None:
            self.epoch = self.epoch_source()
        order = self.order(self.epoch)
        self.epoch += 1  # without an epoch source, each pass reshuffles
        bank = self.bank
        storage = bank.images.device
        order_on_storage = order.to(storage)
        order_on_device = order.to(bank.device)
        for b in range(len(self)):
            positions = order_on_storage[b * self.batch_size : (b + 1) * self.batch_size]
            rows = self._members_on_storage[positions]
            if bank.where == "pinned":  # gather into pinned memory, copy without blocking the host
                gathered = torch.empty((len(rows), *bank.images.shape[1:]), dtype=torch.uint8, pin_memory=True)
                torch.index_select(bank.images, 0, rows, out=gathered)
                images = gathered.to(bank.device, non_blocking=True)
            else:
                images = bank.images.index_select(0, rows)
            split_positions = order_on_device[b * self.batch_size : (b + 1) * self.batch_size]
            targets = self._targets[split_positions]
            # N x H x W x 3 -> N x 3 x H x W as a view: channels_last memory, no copy
            yield images.permute(0, 3, 1, 2), targets, split_positions, []
