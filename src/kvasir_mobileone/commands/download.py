"""`kvasir download`: fetch, check and extract Kvasir v2 or HyperKvasir (data/download.py does the work)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from kvasir_mobileone.data.catalog import DATASETS
from kvasir_mobileone.data.download import check_zip, extract, fetch, is_extracted


def download(
    dest: str = "data",
    dataset: Literal["kvasir-v2", "hyper-kvasir"] = "kvasir-v2",
    url: str | None = None,
    expected_size: int | None = None,
    keep_zip: bool = True,
) -> Path:
    """Download Kvasir v2 (or HyperKvasir's labeled images) and unpack it, a folder per class.

    Kvasir v2 into DEST/kvasir-dataset-v2/<class>/, or HyperKvasir's labeled images (--dataset hyper-kvasir) into
    DEST/labeled-images/<tract>/<group>/<class>/; resumes partial downloads; idempotent. --url: another mirror."""
    spec = DATASETS[dataset]
    url = url or spec.url
    dest_dir = Path(dest)
    folder = dest_dir / spec.folder
    if is_extracted(folder, spec):
        print(f"{spec.title} is already in {folder}; nothing to do.")
        return folder
    dest_dir.mkdir(parents=True, exist_ok=True)
    zip_path = dest_dir / spec.zip_name
    if not zip_path.exists():
        fetch(url, zip_path)
    check_zip(zip_path, spec, expected_size=expected_size)
    extract(zip_path, dest_dir, spec.folder)
    if not keep_zip:
        zip_path.unlink()
    split = " --data.official_split hyper-kvasir-2fold" if spec.key == "hyper-kvasir" else ""
    print(f"{spec.title} is in {folder}. Licence: {spec.terms}\nNext: kvasir fit --data.data_dir {folder}{split}")
    return folder
