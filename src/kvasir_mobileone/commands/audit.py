"""`kvasir audit`: does the model look at the tissue, or at overlays? Region masking, occlusion, baseline, verdict."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kvasir_mobileone.data.regions import REGIONS, census_by_class, parse_regions
from kvasir_mobileone.errors import UserError
from kvasir_mobileone.evaluation.audit import (
    CENSUS_SIZE,
    baseline_finding,
    load_pixels,
    occlusion_maps,
    region_masking,
    region_share,
    shortcut_baseline,
    verdict,
    write_audit,
)
from kvasir_mobileone.evaluation.metrics import accuracy
from kvasir_mobileone.images import black_out
from kvasir_mobileone.io import file_sha256
from kvasir_mobileone.models.loading import open_run
from kvasir_mobileone.runs import REPORT_NAME


def audit(
    run: str,
    regions: list[str] | None = None,
    out: str | None = None,
    occlusion_per_class: int = 16,
    manifest: str | None = None,
    data_dir: str | None = None,
    n_resamples: int = 2000,
    seed: int = 0,
) -> dict:
    """Audit a run on its test images for shortcuts: region masking, occlusion, a shortcut baseline, a census.

    --regions '[bottom-left-box, top-left-text, box:0.7,0,1,0.2]' (default: every named region); writes
    RUN/audit/report.md with the verdict at the top."""
    trained = open_run(run, data_dir)
    rows, _ = trained.manifest_rows(manifest)
    module, norm, names = trained.module, trained.norm, trained.module.class_names
    chosen = parse_regions(regions or list(REGIONS))
    if not chosen:
        raise UserError("No region to audit: give --regions names or name:x0,y0,x1,y1 boxes.")
    data = trained.data_dir()
    index = {c: i for i, c in enumerate(names)}
    test_rows = [r for r in rows if r["split"] == "test"]
    targets = np.array([index[r["label"]] for r in test_rows])
    # the model's own input: its trained mask (if any) applied first, then the audited region on top
    pixels = np.stack(
        [
            black_out(p, norm.mask)
            for p in load_pixels(
                data, [r["path"] for r in test_rows], norm.image_size, norm.interpolation, "test images"
            )
        ]
    )
    masking, base_pred = region_masking(module, norm, pixels, targets, chosen, names, n_resamples, seed)
    maps, mean_images = occlusion_maps(module, norm, pixels, targets, len(names), occlusion_per_class)
    shares = region_share(maps, chosen)
    thumbs = load_pixels(data, [r["path"] for r in rows], CENSUS_SIZE, "bilinear", "census")
    labels = np.array([index[r["label"]] for r in rows])
    splits = np.array([r["split"] for r in rows])
    result = {
        "run": str(trained.source),
        "checkpoint_sha256": file_sha256(trained.ckpt),  # a bundle's card quotes the audit only for this checkpoint
        "n": int(len(targets)),
        "accuracy": float(accuracy(targets, base_pred)),
        "trained_mask": [list(b) for b in norm.mask],
        "regions": [{k: v for k, v in r.items() if k not in ("changed", "masked_predicted")} for r in masking],
        "occlusion_region_share": shares,
        "shortcut_baseline": shortcut_baseline(thumbs, splits, labels, chosen),
        "census": census_by_class(thumbs, labels, names),
    }
    result["shortcut_baseline"]["finding"] = baseline_finding(result["shortcut_baseline"], result["accuracy"])
    result["verdict"] = verdict(result)
    out_dir = Path(out) if out else trained.home.audit_dir
    write_audit(out_dir, result, masking, pixels, targets, base_pred, maps, mean_images, names, chosen)
    print(result["verdict"])
    print(f"Audit report: {out_dir / REPORT_NAME}")
    return result
