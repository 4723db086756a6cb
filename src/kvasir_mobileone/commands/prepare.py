"""`kvasir prepare`: decode every image once into the cache that `fit` reads."""

from __future__ import annotations

from pathlib import Path

from kvasir_mobileone.data.cache import CACHE_DIR_NAME, build_cache
from kvasir_mobileone.data.folder import scan_image_folder


def prepare(
    data_dir: str = "data/kvasir-dataset-v2",
    image_size: int = 224,
    interpolation: str = "bilinear",
    cache_dir: str | None = None,
) -> Path:
    """Decode every image once into the cache that fit reads.

    Decode every image once at IMAGE_SIZE x IMAGE_SIZE into DATA/.kvasir_cache (fit uses it when
    --data.image_size, or the model's own size, matches; MobileOne's is 224)."""
    size = image_size
    items = scan_image_folder(data_dir)
    cache = build_cache(data_dir, [rel for rel, _ in items], size, interpolation, cache_dir)
    where = Path(cache_dir) if cache_dir else Path(data_dir) / CACHE_DIR_NAME
    print(f"Cache of {len(cache.valid)} images at {size}x{size} in {where}; {len(cache.errors)} could not be decoded.")
    for rel, reason in cache.errors.items():
        print(f"  unreadable: {rel}: {reason}")
    return where
