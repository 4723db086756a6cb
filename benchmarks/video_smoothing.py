"""How the timeline's two settings (--stay, --min_segment of `kvasir predict VIDEO`) trade boundary accuracy against
switches, side by side on synthetic examinations: synthesizes N videos, classifies each once with the bundle, then
smooths the same per-frame answers with every setting and compares with the truth. What chose the defaults.

    python benchmarks/video_smoothing.py --model BUNDLE [--videos 3] [--out DIR]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from kvasir_mobileone.cli import main
from kvasir_mobileone.deploy.timeline import OUTSIDE_STATE, smooth
from kvasir_mobileone.evaluation.examination import compare_timeline
from kvasir_mobileone.io import markdown_table, read_csv, write_csv

STAYS = (0.1, 0.5, 0.9, 0.99)
MIN_SEGMENTS = (0.0, 0.5, 1.0, 2.0)


def resmoothed(frames_csv: Path, out: Path, stay: float, min_segment: float) -> Path:
    rows = read_csv(frames_csv)
    names = [k.removeprefix("p_") for k in rows[0] if k.startswith("p_")]
    probs = np.array([[float(r[f"p_{c}"]) for c in names] for r in rows])
    outside = np.array([r["outside"] != "" for r in rows])
    times = np.array([float(r["time"]) for r in rows])
    labels = smooth(probs, outside, times, stay, min_segment)["offline"]
    states = [*names, OUTSIDE_STATE]
    header = list(rows[0])
    return write_csv(
        out, header, [[*(r[k] for k in header[:-1]), states[s]] for r, s in zip(rows, labels, strict=True)]
    )


def run(args) -> None:
    root = Path(args.out or tempfile.mkdtemp())
    classes = "[dyed-lifted-polyps, dyed-resection-margins, esophagitis, normal-cecum]"
    watched = []
    for seed in range(args.videos):
        folder = root / f"exam{seed}"
        if not (folder / "examination.mp4").is_file():
            main(
                ["synth", "--video", "true", "--dest", str(folder), "--scale", "0.25", "--classes", classes]
                + ["--seed", str(seed)]
            )
        main(["predict", str(folder / "examination.mp4"), "--model", args.model, "--out", str(folder / "watched")])
        watched.append((folder / "watched" / "frames.csv", folder / "examination_truth.csv"))
    table = []
    for stay in STAYS:
        for min_segment in MIN_SEGMENTS:
            figures = [
                compare_timeline(resmoothed(f, f.with_name(f"s{stay}_{min_segment}.csv"), stay, min_segment), t)
                for f, t in watched
            ]
            found, total = sum(x["boundaries_found"] for x in figures), sum(x["boundaries"] for x in figures)
            raw, smoothed = sum(x["switches_raw"] for x in figures), sum(x["switches_smoothed"] for x in figures)
            table.append(
                [
                    stay,
                    min_segment,
                    f"{found}/{total}",
                    f"{raw}",
                    f"{smoothed}",
                    f"{raw / max(smoothed, 1):.1f}x",
                    f"{np.mean([x['accuracy_smoothed'] for x in figures]):.4f}",
                    f"{np.mean([x['accuracy_raw'] for x in figures]):.4f}",
                ]
            )
    print(
        markdown_table(
            [
                "stay (per s)",
                "min_segment (s)",
                "boundaries within 0.5 s",
                "switches raw",
                "switches smoothed",
                "fewer",
                "frame accuracy smoothed",
                "raw",
            ],
            table,
        )
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--videos", type=int, default=3)
    parser.add_argument("--out", default=None)
    run(parser.parse_args())
