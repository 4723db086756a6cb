"""`kvasir audit`: does the model look at the tissue, or at overlays? Region masking, occlusion, baseline, verdict."""

from __future__ import annotations

import shlex
from pathlib import Path

import numpy as np
from tqdm import tqdm

from kvasir_mobileone.data.eda import CENSUS_SIZE
from kvasir_mobileone.data.field_of_view import (
    AUTO,
    VIEW_QUANTILE,
    ViewTooSmall,
    derive_view,
    frame_maps,
    swap_frame,
    write_view_png,
)
from kvasir_mobileone.data.folder import DataError
from kvasir_mobileone.data.regions import REGIONS, census_by_class, parse_regions
from kvasir_mobileone.errors import UserError
from kvasir_mobileone.evaluation.audit import (
    OVERLAY_LEVELS,
    baseline_features,
    baseline_map,
    baseline_places,
    frame_swap,
    load_pixels,
    mark_grid,
    occlusion_maps,
    region_masking,
    region_share,
    residual_in_view,
    shortcut_baseline,
)
from kvasir_mobileone.evaluation.audit_report import baseline_finding, verdict, write_audit
from kvasir_mobileone.evaluation.frames import map_predictability, plot_frame_maps
from kvasir_mobileone.evaluation.metrics import accuracy
from kvasir_mobileone.extras import require
from kvasir_mobileone.images import box_mask
from kvasir_mobileone.io import file_sha256
from kvasir_mobileone.marks import clean_marks
from kvasir_mobileone.models.loading import open_run
from kvasir_mobileone.runs import AuditFolder


def chosen_view(trained) -> bool:
    """Whether the run was trained inside a view chosen from the data (--data.view_quantile auto)."""
    data = trained.data
    return bool(trained.model_input.field_of_view) and data.field_of_view == "common" and data.view_quantile == AUTO


def frame_findings(result: dict) -> tuple[bool, bool]:
    """(the predictions follow a swapped frame, what the model sees of the frame and overlays predicts the class)."""
    finding = result["shortcut_baseline"].get("finding")
    return bool(result["frame_swap"].get("follows")), finding in ("shortcut", "partial")


def propose_view(trained, rows, out_dir: Path, result: dict) -> dict | None:
    """When the frame tells the class (the swap is followed, or what the model sees of it predicts the class) and
    the run was not trained inside a view chosen from the data, nor cleaned: that view of its training images (as
    `fit --data.field_of_view common --data.view_quantile auto` derives it), written as OUT/field_of_view.png;
    {reason} when no view wide enough passes (the proposal is then the clean-up); None when not needed."""
    follows, open_shortcut = frame_findings(result)
    if not (follows or open_shortcut) or chosen_view(trained) or trained.model_input.clean:
        return None
    model_input = trained.model_input
    try:
        view = derive_view(rows, trained.data_dir(), model_input.image_size, model_input.interpolation, AUTO)
    except DataError as err:  # too_small: even the widest view is below the share fit accepts
        return {"reason": str(err), "too_small": isinstance(err, ViewTooSmall)}
    path = write_view_png(AuditFolder(out_dir).proposed_view, view.visible)
    return {
        "file": str(path),
        "fraction": view.fraction,
        "sha256": view.sha256,
        "quantile": view.quantile,
        "overlays": view.overlays,
        "levels": list(view.levels),
    }


def propose_fit(trained, result: dict) -> dict | None:
    """One `kvasir fit` line for what the measurements support, or None when nothing needs remedying: when the
    predictions follow a swapped frame, or what the model sees of the frame and overlays predicts the class (the
    baseline's lower bound above the majority rate), train on the same split, with the run's config, inside the
    common field of view chosen from the data (--data.field_of_view common --data.view_quantile auto, no frame
    swap: the remedy `python benchmarks/frame_remedies.py` found to hold on every split, with the best accuracy on
    new frames). A run trained inside that view that still follows, or one for which no view wide enough passes, is
    proposed the clean-up of its marks inside the view (--data.clean_frame inpaint: a step every app must then
    reproduce). A run inside the chosen view whose predictions do not follow is proposed nothing more (what its
    inputs still allow is in the report), and neither is a cleaned run."""
    follows, open_shortcut = frame_findings(result)
    chosen, viewed = chosen_view(trained), bool(trained.model_input.field_of_view)
    if trained.model_input.clean or not (follows or open_shortcut) or (chosen and not follows):
        return None
    refused, too_small = ((result.get("proposed_view") or {}).get(k) for k in ("reason", "too_small"))
    home = trained.home
    words = ["kvasir", "fit", "--config", str(home.config), "--data.manifest", str(home.manifest)]
    why = "the predictions follow a swapped frame" if follows else "the frame and overlays it sees predict the class"
    if chosen or refused:
        if not viewed and not too_small:  # else it cleans the whole input, as no view is wide enough
            words += ["--data.field_of_view", "common", "--data.view_quantile", f"{VIEW_QUANTILE:g}"]
        words += ["--data.clean_frame", "inpaint"]
        words += ["--data.loader", "workers"] if trained.data.loader == "resident" else []  # the clean-up's loader
        suffix = "clean"
        why += (
            "; it was trained inside a view chosen from the data: its marks inside the view cleaned up"
            if chosen
            else "; no view chosen from the data is wide enough: its marks inside the view cleaned up"
        )
    else:
        words += ["--data.field_of_view", "common", "--data.view_quantile", AUTO]
        words += ["--data.frame_swap", "0"] if trained.data.frame_swap else []
        suffix = "chosen-view"
    words += ["--trainer.run_name", f"{home.root.name}-{suffix}"]
    return {"command": shlex.join(words), "why": why}


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
    module, model_input, names = trained.module, trained.model_input, trained.module.class_names
    chosen = parse_regions(mask_regions or list(REGIONS))
    if not chosen:
        raise UserError("No region to audit: give --mask_regions names or name:x0,y0,x1,y1 boxes.")
    data = trained.data_dir()
    index = {c: i for i, c in enumerate(names)}
    test_rows = [r for r in rows if r["split"] == "test"]
    targets = np.array([index[r["label"]] for r in test_rows])
    # the model's own input: its trained mask and field of view (if any) applied first, then the audited region
    raw = load_pixels(
        data, [r["path"] for r in test_rows], model_input.image_size, model_input.interpolation, "test images"
    )
    pixels = np.stack([model_input.prepare(p) for p in raw])
    masking, base_pred = region_masking(module, model_input, pixels, targets, chosen, names, n_resamples, seed)
    swap = frame_swap(module, model_input, raw, targets, base_pred, n_resamples, seed)
    maps, mean_images = occlusion_maps(module, model_input, pixels, targets, len(names), occlusion_per_class)
    shares = region_share(maps, chosen)
    thumbs = load_pixels(data, [r["path"] for r in rows], CENSUS_SIZE, "bilinear", "census")
    places = baseline_places(chosen)
    in_places = box_mask(
        [b for boxes in places.values() for b in boxes], model_input.image_size, model_input.image_size
    )
    decoded = {r["path"]: p for r, p in zip(test_rows, raw, strict=True)}  # the test images: decoded once

    def as_seen(path: str) -> np.ndarray:  # an image as the model sees it, at its input size
        image = decoded[path] if path in decoded else model_input.decode_raw(data / path)
        return model_input.prepare(image)

    whole = np.ones_like(in_places)

    def baseline_view(image: np.ndarray) -> np.ndarray:  # pooled in the overlay places, the colour histogram anywhere
        return np.r_[
            baseline_features(image, in_places)[: -(OVERLAY_LEVELS + 1)],
            baseline_features(image, whole)[-(OVERLAY_LEVELS + 1) :],
        ]

    seen, grids = [], []
    for r in tqdm(rows, desc="shortcut baseline", unit="img"):  # the baseline reads the images as the model sees them
        image = as_seen(r["path"])
        seen.append(baseline_view(image))
        grids.append(mark_grid(image))
    seen = np.stack(seen)
    labels = np.array([index[r["label"]] for r in rows])
    splits = np.array([r["split"] for r in rows])
    out_dir = Path(out) if out else trained.home.audit.root
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_frame_maps(
        frame_maps(thumbs, labels, names),
        AuditFolder(out_dir).frame_maps_png,
        model_input.visible() if model_input.field_of_view else None,
    )
    result = {
        "run": str(trained.source),
        "checkpoint_sha256": file_sha256(trained.ckpt),  # a bundle's card quotes the audit only for this checkpoint
        "n": int(len(targets)),
        "accuracy": float(accuracy(targets, base_pred)),
        "trained_mask": [list(b) for b in model_input.mask],
        "regions": [{k: v for k, v in r.items() if k not in ("changed", "masked_predicted")} for r in masking],
        "occlusion_region_share": shares,
        "field_of_view": (
            {"fraction": float(model_input.visible().mean()), "sha256": model_input.view_sha256}
            if model_input.field_of_view
            else None
        ),
        "frame_swap": {
            k: v
            for k, v in swap.items()
            if k not in ("donors", "swapped_predicted", "same_class_donors", "control_predicted")
        },
        "shortcut_baseline": shortcut_baseline(seen, splits, labels, list(places)),
        "baseline_map": baseline_map(np.stack(grids), splits, labels, names, AuditFolder(out_dir).baseline_map_png),
        "census": census_by_class(thumbs, labels, names),
        "frame_maps": map_predictability(thumbs, labels, splits == "train", splits == "test"),
    }
    if model_input.field_of_view:
        visible = model_input.visible()  # what is left after the clean-up, if the model has one
        left = [clean_marks(r, visible) for r in raw] if model_input.clean else raw
        result["residual_in_view"] = residual_in_view(left, targets, visible, names, AuditFolder(out_dir).residual_png)
    result["shortcut_baseline"]["finding"] = baseline_finding(result["shortcut_baseline"], result["accuracy"])
    result["proposed_view"] = propose_view(trained, rows, out_dir, result)
    result["proposed_fit"] = propose_fit(trained, result)
    result["verdict"] = verdict(result)
    examples = [
        (
            pixels[i],
            names[base_pred[i]],
            model_input.prepare(swap_frame(raw[i], raw[j])),
            names[swap["swapped_predicted"][i]],
        )
        for i, j in list(enumerate(swap.get("donors", [])))[:4]
    ]
    write_audit(out_dir, result, masking, pixels, targets, base_pred, maps, mean_images, names, chosen, examples)
    print(result["verdict"])
    if result["proposed_fit"]:
        print(f"Proposed next run: {result['proposed_fit']['command']}")
    print(f"Audit report: {AuditFolder(out_dir).report}")
    return result
