"""`kvasir audit`: does the model look at the tissue, or at overlays? Region masking, occlusion, baseline, verdict."""

from __future__ import annotations

from pathlib import Path

from kvasir_mobileone.data.regions import REGIONS, parse_regions
from kvasir_mobileone.errors import UserError
from kvasir_mobileone.evaluation.audit_report import write_audit
from kvasir_mobileone.evaluation.shortcut_audit import audit_run
from kvasir_mobileone.extras import require
from kvasir_mobileone.models.loading import open_run
from kvasir_mobileone.runs import AuditFolder


def audit(
    run: str,
    mask_regions: list[str] | None = None,
    out: str | None = None,
    occlusion_per_class: int = 16,
    manifest: str | None = None,
    data_dir: str | None = None,
    n_resamples: int = 2000,
    seed: int = 0,
) -> dict:
    """Audit a run on its test images for shortcuts: region masking, occlusion, a shortcut baseline, a census.

    --mask_regions '[bottom-left-box, top-left-text, box:0.7,0,1,0.2]' (default: every named region); writes
    RUN/audit/report.md with the verdict at the top."""
    require("captum", "explain")  # the occlusion maps, at the end: say so before the work
    trained = open_run(run, data_dir)
    rows, _ = trained.manifest_rows(manifest)
    chosen = parse_regions(mask_regions or list(REGIONS))
    if not chosen:
        raise UserError("No region to audit: give --mask_regions names or name:x0,y0,x1,y1 boxes.")
    out_dir = Path(out) if out else trained.home.audit.root
    result, drawn = audit_run(trained, rows, chosen, out_dir, occlusion_per_class, n_resamples, seed)
    write_audit(out_dir, result, *drawn)
    print(result["verdict"])
    if result["proposed_fit"]:
        print(f"Proposed next run: {result['proposed_fit']['command']}")
    print(f"Audit report: {AuditFolder(out_dir).report}")
    return result
