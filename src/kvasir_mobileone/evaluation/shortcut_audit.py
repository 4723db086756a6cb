"""The shortcut audit of a trained run, end to end: its test images under region masking, frame swaps and occlusion,
a shortcut baseline and census over every image as the model sees it, and what to do about it (a proposed view and
fit). `kvasir audit` arranges it; evaluation/audit.py holds the measurements, audit_report.py the report."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from kvasir_mobileone.data.eda import CENSUS_SIZE
from kvasir_mobileone.data.field_of_view import (
    AUTO,
    VIEW_QUANTILE,
    ViewTooSmall,
    derive_view,
    write_view_png,
)
from kvasir_mobileone.data.folder import DataError
from kvasir_mobileone.data.frame import frame_maps, swap_frame
from kvasir_mobileone.data.regions import census_by_class
from kvasir_mobileone.evaluation.audit import (
    baseline_map,
    baseline_places,
    frame_swap,
    load_pixels,
    mark_grid,
    occlusion_maps,
    region_masking,
    region_share,
    residual_in_view,
    seen_features,
    shortcut_baseline,
)
from kvasir_mobileone.evaluation.audit_report import baseline_finding, verdict
from kvasir_mobileone.evaluation.frames import map_predictability, plot_frame_maps
from kvasir_mobileone.evaluation.metrics import accuracy
from kvasir_mobileone.images import box_mask
from kvasir_mobileone.io import file_sha256
from kvasir_mobileone.marks import clean_marks
from kvasir_mobileone.runs import AuditFolder


@dataclass
class TestImages:
    """The run's test images: decoded at the input size (`raw`), as the model sees them (`pixels`: its trained
    mask and field of view applied), their class indices."""

    rows: list[dict[str, str]]
    raw: np.ndarray
    pixels: np.ndarray
    targets: np.ndarray


def test_images(trained, rows) -> TestImages:
    model_input, index = trained.model_input, {c: i for i, c in enumerate(trained.class_names)}
    test_rows = [r for r in rows if r["split"] == "test"]
    raw = load_pixels(
        trained.data_dir(),
        [r["path"] for r in test_rows],
        model_input.image_size,
        model_input.interpolation,
        "test images",
    )
    pixels = np.stack([model_input.prepare(p) for p in raw])
    return TestImages(test_rows, raw, pixels, np.array([index[r["label"]] for r in test_rows]))


def baseline_inputs(trained, rows, test: TestImages, places: dict) -> tuple[np.ndarray, np.ndarray]:
    """(seen_features, mark_grid) of every image of the manifest as the model sees it, at its input size; the test
    images decoded once."""
    model_input, data = trained.model_input, trained.data_dir()
    size = model_input.image_size
    in_places = box_mask([b for boxes in places.values() for b in boxes], size, size)
    decoded = {r["path"]: p for r, p in zip(test.rows, test.raw, strict=True)}
    seen, grids = [], []
    for r in tqdm(rows, desc="shortcut baseline", unit="img"):
        raw = decoded[r["path"]] if r["path"] in decoded else model_input.decode_raw(data / r["path"])
        image = model_input.prepare(raw)
        seen.append(seen_features(image, in_places))
        grids.append(mark_grid(image))
    return np.stack(seen), np.stack(grids)


def audit_run(trained, rows, regions: dict, out_dir: Path, occlusion_per_class: int, n_resamples: int, seed: int):
    """(the audit's result, as audit.json holds it; what the report draws besides: the arguments of
    audit_report.write_audit after out_dir and result). The figures of the frame are written to out_dir."""
    module, model_input, names = trained.module, trained.model_input, trained.class_names
    test = test_images(trained, rows)
    masking, base_pred = region_masking(
        module, model_input, test.pixels, test.targets, regions, names, n_resamples, seed
    )
    swap = frame_swap(module, model_input, test.raw, test.targets, base_pred, n_resamples, seed)
    maps, mean_images = occlusion_maps(module, model_input, test.pixels, test.targets, len(names), occlusion_per_class)
    thumbs = load_pixels(trained.data_dir(), [r["path"] for r in rows], CENSUS_SIZE, "bilinear", "census")
    places = baseline_places(regions)
    seen, grids = baseline_inputs(trained, rows, test, places)
    index = {c: i for i, c in enumerate(names)}
    labels, splits = np.array([index[r["label"]] for r in rows]), np.array([r["split"] for r in rows])
    folder = AuditFolder(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_frame_maps(
        frame_maps(thumbs, labels, names),
        folder.frame_maps_png,
        model_input.visible() if model_input.field_of_view else None,
    )
    dropped = ("donors", "swapped_predicted", "same_class_donors", "control_predicted")
    result = {
        "run": str(trained.source),
        "checkpoint_sha256": file_sha256(trained.ckpt),  # a bundle's card quotes the audit only for this checkpoint
        "n": int(len(test.targets)),
        "accuracy": float(accuracy(test.targets, base_pred)),
        "trained_mask": [list(b) for b in model_input.mask],
        "regions": [{k: v for k, v in r.items() if k not in ("changed", "masked_predicted")} for r in masking],
        "occlusion_region_share": region_share(maps, regions),
        "field_of_view": (
            {"fraction": float(model_input.visible().mean()), "sha256": model_input.view_sha256}
            if model_input.field_of_view
            else None
        ),
        "frame_swap": {k: v for k, v in swap.items() if k not in dropped},
        "shortcut_baseline": shortcut_baseline(seen, splits, labels, list(places)),
        "baseline_map": baseline_map(grids, splits, labels, names, folder.baseline_map_png),
        "census": census_by_class(thumbs, labels, names),
        "frame_maps": map_predictability(thumbs, labels, splits == "train", splits == "test"),
    }
    if model_input.field_of_view:
        visible = model_input.visible()  # what is left after the clean-up, if the model has one
        left = [clean_marks(r, visible) for r in test.raw] if model_input.clean else test.raw
        result["residual_in_view"] = residual_in_view(left, test.targets, visible, names, folder.residual_png)
    result["shortcut_baseline"]["finding"] = baseline_finding(result["shortcut_baseline"], result["accuracy"])
    result["proposed_view"] = propose_view(trained, rows, out_dir, result)
    result["proposed_fit"] = propose_fit(trained, result)
    result["verdict"] = verdict(result)
    examples = [
        (
            test.pixels[i],
            names[base_pred[i]],
            model_input.prepare(swap_frame(test.raw[i], test.raw[j])),
            names[swap["swapped_predicted"][i]],
        )
        for i, j in list(enumerate(swap.get("donors", [])))[:4]
    ]
    drawn = (masking, test.pixels, test.targets, base_pred, maps, mean_images, names, regions, examples)
    return result, drawn


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
