"""How the timeline's settings (--stay, --min_segment, --ood_weight of `kvasir predict VIDEO`) trade boundary
accuracy against switches, side by side on synthetic examinations: synthesizes N videos, classifies each once with
the bundle, then smooths the same per-frame answers with every setting and compares with the truth (every frame
graded, the black gaps included). What chose the defaults; the last lines say whether they meet the goals (95% of
boundaries within 0.5 s, 10x fewer switches, frame accuracy no worse).

    python benchmarks/video_smoothing.py --model BUNDLE [--videos 6] [--out DIR]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from kvasir_mobileone.cli import main
from kvasir_mobileone.deploy.timeline import MIN_SEGMENT, OOD_WEIGHT, OUTSIDE_STATE, STAY, smooth
from kvasir_mobileone.evaluation.examination import compare_timeline
from kvasir_mobileone.evaluation.stats import matched_pairs_interval, wilson_interval
from kvasir_mobileone.io import markdown_table, read_csv, write_csv

STAYS = (0.5, 0.99)
MIN_SEGMENTS = (0.0, 0.5, 1.0)
OOD_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0)


def resmoothed(frames_csv: Path, out: Path, stay: float, min_segment: float, ood_weight: float) -> Path:
    rows = read_csv(frames_csv)
    names = [k.removeprefix("p_") for k in rows[0] if k.startswith("p_")]
    probs = np.array([[float(r[f"p_{c}"]) for c in names] for r in rows])
    blank = np.array([r["blank"] != "" for r in rows])
    odds = np.array([float(r["ood_odds"]) for r in rows])
    times = np.array([float(r["time"]) for r in rows])
    labels = smooth(probs, odds, times, stay, min_segment, blank, ood_weight)["offline"]
    states = [*names, OUTSIDE_STATE]
    header = list(rows[0])
    return write_csv(
        out, header, [[*(r[k] for k in header[:-1]), states[s]] for r, s in zip(rows, labels, strict=True)]
    )


def pooled(figures: list[dict]) -> dict:
    found, total = sum(x["boundaries_found"] for x in figures), sum(x["boundaries"] for x in figures)
    only_s, only_r = sum(x["only_smoothed_right"] for x in figures), sum(x["only_raw_right"] for x in figures)
    n = sum(x["frames"] for x in figures)
    return {
        "found": found,
        "total": total,
        "raw": sum(x["switches_raw"] for x in figures),
        "smoothed": sum(x["switches_smoothed"] for x in figures),
        "truth": sum(x["switches_truth"] for x in figures),
        "accuracy_smoothed": sum(x["accuracy_smoothed"] * x["frames"] for x in figures) / n,
        "accuracy_raw": sum(x["accuracy_raw"] * x["frames"] for x in figures) / n,
        "difference": (only_s - only_r) / n,
        "difference_ci": matched_pairs_interval(only_s, only_r, n),
    }


def watched_videos(root: Path, videos: int, model: str) -> list[tuple[Path, Path]]:
    """(frames.csv, truth CSV) of each synthetic examination, made and classified once (kept in root)."""
    classes = "[dyed-lifted-polyps, dyed-resection-margins, esophagitis, normal-cecum]"
    watched = []
    for seed in range(videos):
        folder = root / f"exam{seed}"
        if not (folder / "examination.mp4").is_file():
            main(
                ["synth", "--video", "true", "--dest", str(folder), "--scale", "0.25", "--classes", classes]
                + ["--seed", str(seed)]
            )
        main(["predict", str(folder / "examination.mp4"), "--model", model, "--out", str(folder / "watched")])
        watched.append((folder / "watched" / "frames.csv", folder / "examination_truth.csv"))
    return watched


def run(args) -> None:
    root = Path(args.out or tempfile.mkdtemp())
    watched = watched_videos(root, args.videos, args.model)
    table, chosen = [], None
    for ood_weight in OOD_WEIGHTS:
        for stay in STAYS:
            for min_segment in MIN_SEGMENTS:
                name = f"s{stay}_{min_segment}_{ood_weight}.csv"
                p = pooled(
                    [
                        compare_timeline(resmoothed(f, f.with_name(name), stay, min_segment, ood_weight), t)
                        for f, t in watched
                    ]
                )
                if (stay, min_segment, ood_weight) == (STAY, MIN_SEGMENT, OOD_WEIGHT):
                    chosen = p
                table.append(
                    [
                        ood_weight,
                        stay,
                        min_segment,
                        f"{p['found']}/{p['total']}",
                        p["raw"],
                        p["smoothed"],
                        p["truth"],
                        f"{p['raw'] / max(p['smoothed'], 1):.1f}x",
                        f"{p['accuracy_smoothed']:.4f}",
                        f"{p['accuracy_raw']:.4f}",
                        f"{p['difference']:+.4f} [{p['difference_ci'][0]:+.4f}, {p['difference_ci'][1]:+.4f}]",
                    ]
                )
    headers = ["ood_weight", "stay (per s)", "min_segment (s)", "boundaries within 0.5 s", "switches raw"]
    headers += ["smoothed", "truth", "fewer", "frame accuracy smoothed", "raw", "difference [95% CI]"]
    print(markdown_table(headers, table))
    if chosen:
        low, high = wilson_interval(chosen["found"], chosen["total"])
        spurious_raw, spurious = chosen["raw"] - chosen["truth"], chosen["smoothed"] - chosen["truth"]
        print(
            f"\nDefaults (--stay {STAY} --min_segment {MIN_SEGMENT} --ood_weight {OOD_WEIGHT}) on {args.videos} "
            f"videos: {chosen['found']}/{chosen['total']} boundaries within 0.5 s "
            f"({chosen['found'] / chosen['total']:.0%}, 95% CI [{low:.0%}, {high:.0%}]); "
            f"switches {chosen['raw']} raw -> {chosen['smoothed']} smoothed "
            f"({chosen['raw'] / max(chosen['smoothed'], 1):.1f}x fewer; the truth has {chosen['truth']}: switches "
            f"beyond the truth's {spurious_raw} -> {spurious}); frame accuracy {chosen['accuracy_smoothed']:.4f} vs "
            f"{chosen['accuracy_raw']:.4f} raw, difference {chosen['difference']:+.4f} "
            f"[{chosen['difference_ci'][0]:+.4f}, {chosen['difference_ci'][1]:+.4f}]."
        )


def arguments(doc: str) -> argparse.Namespace:
    """--model (the bundle), --videos (how many synthetic examinations), --out (where they are kept)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--videos", type=int, default=6)
    parser.add_argument("--out", default=None)
    return parser.parse_args()


if __name__ == "__main__":
    run(arguments(__doc__))
