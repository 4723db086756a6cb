"""Unlabeled frames for distillation (--data.unlabeled_dir): every image under a folder, checked as a labeled folder
is (unreadable files named, not used) and refused where it would leak: a frame that is a near-duplicate (perceptual
hash) of a val or test image of the run's split is left out of training, since a model that learned the teacher's
answer on it has seen the test image. What was found, used and left out is counted in the run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kvasir_mobileone.data.check import hamming, inspect_cached
from kvasir_mobileone.data.folder import DataError
from kvasir_mobileone.io import IMAGE_EXTENSIONS

UNLABELED_LABEL = ""  # the manifest-row label of an unlabeled frame: no class


@dataclass
class UnlabeledFrames:
    """The frames of --data.unlabeled_dir that training may use, and what was left out and why."""

    folder: Path
    found: int
    rows: list[dict[str, str]]  # {path (relative to folder), label "", split "unlabeled"}
    left_out: list[dict[str, str]] = field(default_factory=list)  # {path, reason}

    def summary(self) -> dict:
        reasons: dict[str, int] = {}
        for row in self.left_out:
            kind = (
                "near-duplicate of a val or test image" if row["reason"].startswith("near-duplicate") else "unreadable"
            )
            reasons[kind] = reasons.get(kind, 0) + 1
        return {"folder": str(self.folder), "found": self.found, "used": len(self.rows), "left_out": reasons}

    def describe(self) -> str:
        counts = self.summary()["left_out"]
        left = ", ".join(f"{n} {why}" for why, n in counts.items()) or "none left out"
        return f"{len(self.rows)} of {self.found} unlabeled frames in {self.folder} used ({left})"


def image_files(folder: Path) -> list[str]:
    """Every image under `folder` (any depth, hidden files and the tool's cache skipped), relative, sorted."""
    return sorted(
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_EXTENSIONS
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        and (p.is_file() or p.is_symlink())
    )


def unlabeled_frames(
    folder: str | Path,
    data_dir: str | Path,
    rows: list[dict[str, str]],
    near_duplicate_bits: int,
    cache_dir: str | None = None,
    workers: int | None = None,
) -> UnlabeledFrames:
    """The usable frames of `folder` against the split `rows` of `data_dir` (module docstring)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"--data.unlabeled_dir {folder}: no such folder. Give a folder of images (any layout).")
    names = image_files(folder)
    if not names:
        raise DataError(f"--data.unlabeled_dir {folder} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))}).")
    infos = inspect_cached(folder, names, workers, cache_dir=Path(cache_dir) / "unlabeled" if cache_dir else None)
    held_out = [r["path"] for r in rows if r["split"] in ("val", "test")]
    held_infos = inspect_cached(Path(data_dir), held_out, workers, cache_dir=cache_dir)
    held_hashes = np.array(
        [i["phash"] for i in held_infos if "phash" in i and not i.get("flat")], dtype=np.uint64
    ).reshape(-1)
    held_names = [p for p, i in zip(held_out, held_infos, strict=True) if "phash" in i and not i.get("flat")]
    used, left_out = [], []
    for name, info in zip(names, infos, strict=True):
        if "error" in info:
            left_out.append({"path": name, "reason": f"unreadable: {info['error']}"})
            continue
        if len(held_hashes) and not info.get("flat") and near_duplicate_bits >= 0:
            bits = hamming(np.uint64(info["phash"]), held_hashes)
            nearest = int(np.argmin(bits))
            if bits[nearest] <= near_duplicate_bits:
                left_out.append(
                    {
                        "path": name,
                        "reason": f"near-duplicate of {held_names[nearest]} (phash within {int(bits[nearest])} bits)",
                    }
                )
                continue
        used.append({"path": name, "label": UNLABELED_LABEL, "split": "unlabeled"})
    if not used:
        raise DataError(
            f"None of the {len(names)} images of --data.unlabeled_dir {folder} can be used: "
            + "; ".join(f"{r['path']}: {r['reason']}" for r in left_out[:3])
        )
    return UnlabeledFrames(folder, len(names), used, left_out)
