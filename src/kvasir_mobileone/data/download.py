"""`kvasir download`: fetch the Kvasir v2 or HyperKvasir zip (resumable), check it, extract it; a second run does
nothing."""

from __future__ import annotations

import http.client
import logging
import os
import shutil
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from tqdm import tqdm

from kvasir_mobileone.data.catalog import DATASETS, KVASIR_V2, Dataset
from kvasir_mobileone.errors import UserError

# progress notes below the commands layer; `kvasir` shows them on stdout (cli.show_notes)
log = logging.getLogger(__name__)

FOLDER = KVASIR_V2.folder
CHUNK = 1 << 20


class DownloadError(UserError):
    """The dataset could not be fetched or checked; the message says what to do by hand."""


def _by_hand(url: str, target: Path) -> str:
    """How to do it by hand; `target` is where the zip goes."""
    dataset = next((d for d in DATASETS.values() if d.zip_name == target.name), KVASIR_V2)
    return (
        f"To install it by hand: download {url} in a browser, put the zip at {target} and run this command again "
        f"(it checks and extracts it), or extract it yourself so that {target.parent / dataset.folder}/ holds the "
        f"{len(dataset.classes)} class folders."
    )


def is_extracted(folder: Path, dataset: Dataset = KVASIR_V2) -> bool:
    return all((folder / p).is_dir() and any((folder / p).iterdir()) for p in dataset.paths)


def fetch(url: str, target: Path, timeout: float = 60.0) -> Path:
    """Download url to target through target.part, resuming a partial file with an HTTP Range request."""
    part = target.with_name(target.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # nothing left to fetch: the partial file is already whole
            os.replace(part, target)
            return target
        raise DownloadError(f"{url} answered HTTP {err.code} {err.reason}. {_by_hand(url, target)}") from err
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise DownloadError(f"Could not reach {url} ({reason}); are you offline? {_by_hand(url, target)}") from err

    with response:
        length = int(response.headers.get("Content-Length") or 0)
        start = content_range_start(response.headers.get("Content-Range"))
        if response.status == 206 and start == have:
            total = have + length
            mode = "ab"
        elif response.status == 206:  # a range other than the one asked for: appending would corrupt the file
            raise DownloadError(
                f"{url} answered with bytes from {start} on, but {part} holds {have:,} bytes. Delete {part} and "
                "run the same command again to start over."
            )
        else:  # the server ignored Range: start over
            have, total, mode = 0, length, "wb"
        done = have
        try:
            with (
                part.open(mode) as f,
                tqdm(
                    total=total or None,
                    initial=have,
                    unit="B",
                    unit_scale=True,
                    desc=f"download {target.name}",
                ) as bar,
            ):
                while chunk := response.read(CHUNK):
                    f.write(chunk)
                    done += len(chunk)
                    bar.update(len(chunk))
        except (OSError, http.client.HTTPException) as err:
            raise DownloadError(
                f"Download of {url} broke off at {done:,} of {total:,} bytes ({err}). "
                "Run the same command again to resume from there."
            ) from err
    size = part.stat().st_size
    if total and size != total:
        raise DownloadError(
            f"Download of {url} stopped at {size:,} of {total:,} bytes. Run the same command again to resume."
        )
    os.replace(part, target)
    return target


def content_range_start(header: str | None) -> int | None:
    """The first byte of a `Content-Range: bytes START-END/TOTAL` header."""
    try:
        return int(header.split()[1].split("-")[0]) if header else None
    except (IndexError, ValueError):
        return None


def check_zip(zip_path: Path, dataset: Dataset = KVASIR_V2, expected_size: int | None = None) -> None:
    """The zip opens, its CRCs are good and it holds every class folder of the dataset."""
    size = zip_path.stat().st_size
    if expected_size and size != expected_size:
        raise DownloadError(f"{zip_path} is {size:,} bytes, expected {expected_size:,}. Delete it and run again.")
    try:
        with zipfile.ZipFile(zip_path) as archive:
            names = archive.namelist()
            bad = archive.testzip()
    except zipfile.BadZipFile as err:
        raise DownloadError(f"{zip_path} is not a valid zip ({err}). Delete it and run again.") from err
    if bad:
        raise DownloadError(f"{zip_path} is damaged (bad CRC in {bad}). Delete it and run again.")
    missing = [p for p in dataset.paths if not any(n.startswith(f"{dataset.folder}/{p}/") for n in names)]
    if missing:
        raise DownloadError(
            f"{zip_path} lacks the class folders {missing} under {dataset.folder}/; is it {dataset.title}?"
        )


def extract(zip_path: Path, dest: Path, folder: str = FOLDER) -> Path:
    """Extract into a hidden staging folder, then move the dataset's folder into place in one rename."""
    staging = dest / f".{folder}.extracting"
    shutil.rmtree(staging, ignore_errors=True)
    with zipfile.ZipFile(zip_path) as archive:
        members = [m for m in archive.namelist() if not m.startswith("__MACOSX/")]
        for member in tqdm(members, desc="extract", unit="file"):
            archive.extract(member, staging)
    target = dest / folder
    if target.exists():  # an earlier, incomplete extraction (download() returns early on a complete one)
        aside = dest / f".{folder}.incomplete-{os.getpid()}"
        os.replace(target, aside)
        log.info(f"Moved the incomplete {target} aside to {aside}; delete it once the new folder is in place.")
    os.replace(staging / folder, target)
    shutil.rmtree(staging, ignore_errors=True)
    return target
