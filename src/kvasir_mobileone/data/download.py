"""`kvasir download`: fetch the Kvasir v2 zip (resumable), check it, extract it; a second run does nothing."""

from __future__ import annotations

import http.client
import os
import shutil
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from tqdm import tqdm

from kvasir_mobileone.data.synth import KVASIR_CLASSES
from kvasir_mobileone.errors import UserError

KVASIR_URL = "https://datasets.simula.no/downloads/kvasir/kvasir-dataset-v2.zip"
ZIP_NAME = "kvasir-dataset-v2.zip"
FOLDER = "kvasir-dataset-v2"
CHUNK = 1 << 20


class DownloadError(UserError):
    """The dataset could not be fetched or checked; the message says what to do by hand."""


def _by_hand(url: str, dest: Path) -> str:
    return (
        f"To install it by hand: download {url} in a browser, put the zip at {dest / ZIP_NAME} and run this "
        f"command again (it checks and extracts it), or extract it yourself so that {dest / FOLDER}/<class>/ "
        "holds the 8 class folders."
    )


def is_extracted(folder: Path, classes=KVASIR_CLASSES) -> bool:
    return all((folder / c).is_dir() and any((folder / c).iterdir()) for c in classes)


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
        raise DownloadError(f"{url} answered HTTP {err.code} {err.reason}. {_by_hand(url, target.parent)}") from err
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise DownloadError(
            f"Could not reach {url} ({reason}); are you offline? {_by_hand(url, target.parent)}"
        ) from err

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


def check_zip(zip_path: Path, classes=KVASIR_CLASSES, expected_size: int | None = None) -> None:
    """The zip opens, its CRCs are good and it holds FOLDER/<class>/ for every class."""
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
    missing = [c for c in classes if not any(n.startswith(f"{FOLDER}/{c}/") for n in names)]
    if missing:
        raise DownloadError(f"{zip_path} lacks the class folders {missing} under {FOLDER}/; is it Kvasir v2?")


def extract(zip_path: Path, dest: Path) -> Path:
    """Extract into a hidden staging folder, then move FOLDER into place in one rename."""
    staging = dest / f".{FOLDER}.extracting"
    shutil.rmtree(staging, ignore_errors=True)
    with zipfile.ZipFile(zip_path) as archive:
        members = [m for m in archive.namelist() if not m.startswith("__MACOSX/")]
        for member in tqdm(members, desc="extract", unit="file"):
            archive.extract(member, staging)
    target = dest / FOLDER
    if target.exists():  # an earlier, incomplete extraction (download() returns early on a complete one)
        aside = dest / f".{FOLDER}.incomplete-{os.getpid()}"
        os.replace(target, aside)
        print(f"Moved the incomplete {target} aside to {aside}; delete it once the new folder is in place.")
    os.replace(staging / FOLDER, target)
    shutil.rmtree(staging, ignore_errors=True)
    return target


def download(
    dest: str = "data", url: str = KVASIR_URL, expected_size: int | None = None, keep_zip: bool = True
) -> Path:
    """Kvasir v2 into DEST/kvasir-dataset-v2/<class>/; resumes partial downloads; idempotent."""
    dest_dir = Path(dest)
    folder = dest_dir / FOLDER
    if is_extracted(folder):
        print(f"Kvasir v2 is already in {folder}; nothing to do.")
        return folder
    dest_dir.mkdir(parents=True, exist_ok=True)
    zip_path = dest_dir / ZIP_NAME
    if not zip_path.exists():
        fetch(url, zip_path)
    check_zip(zip_path, expected_size=expected_size)
    extract(zip_path, dest_dir)
    if not keep_zip:
        zip_path.unlink()
    print(
        f"Kvasir v2 is in {folder}. Licence: research and education only; cite Pogorelov et al., MMSys 2017.\n"
        f"Next: kvasir fit --data.data_dir {folder}"
    )
    return folder
