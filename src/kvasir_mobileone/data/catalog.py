"""The public datasets the tool knows by name: where each comes from, how its zip is laid out, its classes, its
licence and citation, and the official splits shipped with the package. Pure Python."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

OFFICIAL_SPLITS_DIR = Path(__file__).parent / "official_splits"


@dataclass(frozen=True)
class Dataset:
    """A public dataset: its download, its layout once extracted, and the terms it comes under."""

    key: str
    title: str
    url: str
    zip_name: str
    folder: str  # the top folder the zip extracts to
    paths: tuple[str, ...]  # class folder paths below `folder`; the class is the leaf folder's name
    licence: str  # the identifier a model card's header gives
    terms: str  # one sentence: what a user may do and must cite
    citation: str

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(p.rsplit("/", 1)[-1] for p in self.paths)


KVASIR_V2 = Dataset(
    key="kvasir-v2",
    title="Kvasir v2",
    url="https://datasets.simula.no/downloads/kvasir/kvasir-dataset-v2.zip",
    zip_name="kvasir-dataset-v2.zip",
    folder="kvasir-dataset-v2",
    paths=(
        "dyed-lifted-polyps",
        "dyed-resection-margins",
        "esophagitis",
        "normal-cecum",
        "normal-pylorus",
        "normal-z-line",
        "polyps",
        "ulcerative-colitis",
    ),
    licence="other",
    terms="Kvasir v2: free for research and education; commercial use needs written permission from its owners; "
    "cite Pogorelov et al., MMSys 2017.",
    citation="Pogorelov K, Randel KR, Griwodz C, et al. KVASIR: A Multi-Class Image Dataset for Computer Aided "
    "Gastrointestinal Disease Detection. Proceedings of the 8th ACM Multimedia Systems Conference (MMSys), 2017.",
)

_LOWER, _UPPER = "lower-gi-tract", "upper-gi-tract"
_HYPER_KVASIR_PATHS = (
    f"{_LOWER}/anatomical-landmarks/cecum",
    f"{_LOWER}/anatomical-landmarks/ileum",
    f"{_LOWER}/anatomical-landmarks/retroflex-rectum",
    f"{_LOWER}/pathological-findings/hemorrhoids",
    f"{_LOWER}/pathological-findings/polyps",
    *(f"{_LOWER}/pathological-findings/ulcerative-colitis-grade-{g}" for g in ("0-1", "1", "1-2", "2", "2-3", "3")),
    f"{_LOWER}/quality-of-mucosal-views/bbps-0-1",
    f"{_LOWER}/quality-of-mucosal-views/bbps-2-3",
    f"{_LOWER}/quality-of-mucosal-views/impacted-stool",
    f"{_LOWER}/therapeutic-interventions/dyed-lifted-polyps",
    f"{_LOWER}/therapeutic-interventions/dyed-resection-margins",
    f"{_UPPER}/anatomical-landmarks/pylorus",
    f"{_UPPER}/anatomical-landmarks/retroflex-stomach",
    f"{_UPPER}/anatomical-landmarks/z-line",
    f"{_UPPER}/pathological-findings/barretts",
    f"{_UPPER}/pathological-findings/barretts-short-segment",
    f"{_UPPER}/pathological-findings/esophagitis-a",
    f"{_UPPER}/pathological-findings/esophagitis-b-d",
)

HYPER_KVASIR = Dataset(
    key="hyper-kvasir",
    title="HyperKvasir (labeled images)",
    url="https://datasets.simula.no/downloads/hyper-kvasir/hyper-kvasir-labeled-images.zip",
    zip_name="hyper-kvasir-labeled-images.zip",
    folder="labeled-images",
    paths=_HYPER_KVASIR_PATHS,
    licence="cc-by-4.0",
    terms="HyperKvasir: Creative Commons Attribution 4.0 (CC BY 4.0); cite Borgli et al., Scientific Data 2020.",
    citation="Borgli H, Thambawita V, Smedsrud PH, et al. HyperKvasir, a comprehensive multi-class image and video "
    "dataset for gastrointestinal endoscopy. Scientific Data 7, 283 (2020). doi:10.1038/s41597-020-00622-y",
)

DATASETS = {d.key: d for d in (KVASIR_V2, HYPER_KVASIR)}

# name -> (shipped CSV, the dataset it splits). Format: file-name;class-name;split-index (see official_splits/).
OFFICIAL_SPLITS = {
    "hyper-kvasir-2fold": (OFFICIAL_SPLITS_DIR / "hyper-kvasir-2fold.csv", HYPER_KVASIR),
    "hyper-kvasir-5fold": (OFFICIAL_SPLITS_DIR / "hyper-kvasir-5fold.csv", HYPER_KVASIR),
}


def identify(class_names: list[str], official_split: str | None = None) -> Dataset | None:
    """The known dataset a run's data is: the one its official split belongs to, else the one dataset whose class
    folders include every class of the run (a subset download counts); None for any other or ambiguous folder."""
    if official_split in OFFICIAL_SPLITS:
        return OFFICIAL_SPLITS[official_split][1]
    matches = [d for d in DATASETS.values() if set(class_names) <= set(d.classes)]
    return matches[0] if len(matches) == 1 else None
