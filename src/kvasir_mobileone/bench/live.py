"""`kvasir benchmark`'s live section: `kvasir watch` itself on a synthetic 1080p H.264 examination played at its
own pace (the reader decoding and scaling each frame as it comes, as from a network stream), at each frame rate,
for each model fp32 and int8: the latency from a frame's arrival to its answer (p50, p95, max), the share of the
frames classified (the rest arrived while the model was busy and were skipped, never queued) and whether p95 is
within one frame interval. Random-init models: speed only, the labels mean nothing."""

from __future__ import annotations

from pathlib import Path

from kvasir_mobileone.bench.video import examination_1080p, speed_predictors
from kvasir_mobileone.deploy.live import LIVE_STAY, watch


def bench_live(
    models: tuple[str, ...], workdir: Path, rates: tuple[int, ...] = (25, 30, 60), seconds_per_class: float = 2.0
) -> list[dict]:
    """One row per frame rate, model and precision."""
    rows = []
    for fps in rates:
        video = examination_1080p(workdir / f"live_1080p_{fps}.mp4", seconds_per_class, fps)
        for name in models:
            for precision, predictor in speed_predictors(name, workdir):
                summary = watch(predictor, str(video), workdir / f"live-{fps}-{name}-{precision}", LIVE_STAY)
                latency, interval = summary["latency_ms"], 1000 / fps
                rows.append(
                    {
                        "model": name,
                        "precision": precision,
                        "fps": fps,
                        "frames_seen": summary["frames_seen"],
                        "frames_classified": summary["frames_classified"],
                        "classified_share": summary["frames_classified"] / max(summary["frames_seen"], 1),
                        "latency_p50_ms": latency["p50"],
                        "latency_p95_ms": latency["p95"],
                        "latency_max_ms": latency["max"],
                        "frame_interval_ms": interval,
                        "p95_within_a_frame": latency["p95"] is not None and latency["p95"] <= interval,
                        "stopped": summary["stopped"],
                    }
                )
    return rows
