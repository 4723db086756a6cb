"""`kvasir audit`: does the model look at the tissue, or at the overlays endoscopy frames carry?

Checks on the run's test images, as the model sees them (its trained mask and field of view applied): predictions
again with each named region masked (two fills); a frame swap (another class's frame and overlays pasted over the
tissue: do the predictions follow the frame?); occlusion sensitivity per class (captum); a shortcut baseline (a
linear model that sees only the frame and the overlay regions); and, on the images as they are, an overlay census
and frame maps per class. The verdict and the report are in audit_report.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

import kvasir_mobileone.pixels as pixel_rules
from kvasir_mobileone.data.frame import swap_frame
from kvasir_mobileone.data.regions import FILLS, REGIONS, mask_pixels
from kvasir_mobileone.data.transforms import normalize
from kvasir_mobileone.evaluation.frames import frame_features, pooled
from kvasir_mobileone.evaluation.intervals import paired_difference
from kvasir_mobileone.evaluation.metrics import macro_f1, present_classes
from kvasir_mobileone.evaluation.stats import mcnemar, wilson_interval
from kvasir_mobileone.extras import require
from kvasir_mobileone.images import box_mask, decode_resized, hide
from kvasir_mobileone.io import pyplot, save_figure
from kvasir_mobileone.marks import frame_pixels, overlay_pixels

plt = pyplot()
ALPHA = 0.05
VERDICT_FILL = "mean"  # the fill that removes what a region shows without adding a black box


def load_pixels(data_dir: Path, paths: list[str], size: int, interpolation: str, what: str) -> np.ndarray:
    return np.stack([decode_resized(data_dir / p, size, interpolation) for p in tqdm(paths, desc=what, unit="img")])


def predict_pixels(module, pixels: np.ndarray, model_input, batch_size: int = 64) -> np.ndarray:
    """Class probabilities of uint8 NHWC images, in fp32."""
    probs = []
    with torch.no_grad():
        for start in range(0, len(pixels), batch_size):
            batch = torch.from_numpy(pixels[start : start + batch_size]).permute(0, 3, 1, 2)
            probs.append(module(normalize(batch, model_input)).float().softmax(dim=1).numpy())
    return np.concatenate(probs)


def holm(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (the audit runs one test per region and fill)."""
    order = np.argsort(p_values)
    adjusted, running = np.empty(len(p_values)), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted.tolist()


def recall_per_class(targets: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    return np.array(
        [np.mean(predicted[targets == c] == c) if np.any(targets == c) else np.nan for c in range(n_classes)]
    )


def region_masking(
    module, model_input, pixels, targets, regions, class_names, n_resamples, seed
) -> tuple[list, np.ndarray]:
    """Per region and fill: the change in accuracy and macro-F1 (paired interval), McNemar, per-class recall."""
    base_pred = predict_pixels(module, pixels, model_input).argmax(axis=1)
    base_recall = recall_per_class(targets, base_pred, len(class_names))
    rows = []
    hidden = model_input.hidden()
    for name, boxes in tqdm(regions.items(), desc="mask regions", unit="region"):
        for fill in FILLS:
            # the run's own trained mask stays black: the deployed model never sees anything else there
            masked = np.stack([hide(mask_pixels(p, boxes, fill), hidden) for p in pixels])
            predicted = predict_pixels(module, masked, model_input).argmax(axis=1)
            diff = paired_difference(targets, base_pred, predicted, n_resamples, seed)  # A = as is, B = masked
            change = recall_per_class(targets, predicted, len(class_names)) - base_recall
            rows.append(
                {
                    "region": name,
                    "fill": fill,
                    # the share of the region the model never sees: its drop is 0 by construction there
                    "hidden_share": hidden_share(hidden, boxes),
                    "boxes": [list(b) for b in boxes],
                    "accuracy_drop": diff["accuracy_difference"],
                    "accuracy_drop_ci": diff["accuracy_difference_ci"],
                    "f1_macro_drop": diff["f1_macro_difference"],
                    "f1_macro_drop_ci": diff["f1_macro_difference_ci"],
                    "right_only_unmasked": diff["only_a_correct"],
                    "right_only_masked": diff["only_b_correct"],
                    "p_value": diff["p_value"],
                    "classes_losing": {class_names[c]: float(v) for c, v in enumerate(change) if v < 0},
                    "classes_gaining": {class_names[c]: float(v) for c, v in enumerate(change) if v > 0},
                    "changed": np.flatnonzero(predicted != base_pred).tolist(),
                    "masked_predicted": predicted.tolist(),
                }
            )
    # Dependence is judged with the tissue-colour fill: a black patch is itself a signal to a model that has seen
    # covered boxes (or never saw black there), so the black fill is reported beside it, not used for the verdict.
    for fill in FILLS:
        of_fill = [r for r in rows if r["fill"] == fill]
        for row, adjusted in zip(of_fill, holm([r["p_value"] for r in of_fill]), strict=True):
            row["p_holm"] = adjusted
            row["significant"] = bool(adjusted < ALPHA and row["accuracy_drop"] > 0)
            row["depends"] = row["significant"] and fill == VERDICT_FILL
    return rows, base_pred


def hidden_share(hidden: np.ndarray | None, boxes) -> float:
    """The share of the boxes' pixels the model never sees (0 without a mask, or for boxes too small to hold one)."""
    inside = box_mask(boxes, *hidden.shape) if hidden is not None else None
    return float(hidden[inside].mean()) if inside is not None and inside.any() else 0.0


def frame_swap(
    module, model_input, raw: np.ndarray, targets: np.ndarray, base_pred, n_resamples: int, seed: int
) -> dict:
    """Each test image's tissue under the frame and overlays of a test image of another class (chosen at random,
    seeded), then the model's own mask: do the predictions follow the donor's class? The control swaps in the frame
    of another image of the image's own class: pasting alone (seams, fills) may disturb the model, but it carries
    no other class. McNemar on "predicts the other donor's class", the other-class swap against the control (and
    against the images as they are); the accuracy change of each with its paired interval."""
    present = np.unique(targets)
    if len(present) < 2:
        return {"status": "too few", "n": int(len(targets))}
    rng = np.random.default_rng(seed)
    donors, same = [], []
    for i, target in enumerate(targets):
        other = rng.choice(present[present != target])
        donors.append(int(rng.choice(np.flatnonzero(targets == other))))
        own = np.flatnonzero(targets == target)
        own = own[own != i] if len(own) > 1 else own
        same.append(int(rng.choice(own)))
    donors, same = np.array(donors), np.array(same)
    swapped = np.stack([model_input.prepare(swap_frame(raw[i], raw[j])) for i, j in enumerate(donors)])
    control = np.stack([model_input.prepare(swap_frame(raw[i], raw[j])) for i, j in enumerate(same)])
    predicted = predict_pixels(module, swapped, model_input).argmax(axis=1)
    control_pred = predict_pixels(module, control, model_input).argmax(axis=1)
    donor_class = targets[donors]
    follow = mcnemar(predicted == donor_class, control_pred == donor_class)  # A = other class's frame, B = own
    as_is = mcnemar(predicted == donor_class, base_pred == donor_class)
    diff = paired_difference(targets, base_pred, predicted, n_resamples, seed)
    disturb = paired_difference(targets, base_pred, control_pred, n_resamples, seed)
    follows = int(np.sum(predicted == donor_class))
    in_control = int(np.sum(control_pred == donor_class))
    return {
        "status": "measured",
        "n": int(len(targets)),
        "follow_donor": follows,
        "follow_donor_ci": wilson_interval(follows, len(targets)),
        "donor_class_as_is": int(np.sum(base_pred == donor_class)),
        "donor_class_in_control": in_control,
        "p_value": follow["p_value"],
        "p_value_as_is": as_is["p_value"],
        "follows": bool(follow["p_value"] < ALPHA and follows > in_control),
        "accuracy_drop": diff["accuracy_difference"],
        "accuracy_drop_ci": diff["accuracy_difference_ci"],
        "control_accuracy_drop": disturb["accuracy_difference"],
        "control_accuracy_drop_ci": disturb["accuracy_difference_ci"],
        "pasting_disturbs": bool(disturb["p_value"] < ALPHA and disturb["accuracy_difference"] > 0),
        "donors": donors.tolist(),
        "same_class_donors": same.tolist(),
        "swapped_predicted": predicted.tolist(),
        "control_predicted": control_pred.tolist(),
    }


def occlusion_maps(
    module, model_input, pixels, targets, n_classes: int, per_class: int
) -> tuple[np.ndarray, np.ndarray]:
    """(per-class mean occlusion attribution HxW, per-class mean image HxWx3): where the evidence for the true
    class comes from. captum's Occlusion slides a patch (the dataset-mean colour) over the image in batches."""
    Occlusion = require("captum.attr", "explain").Occlusion

    size = pixels.shape[1]
    patch = max(2, size // 8)
    occlusion = Occlusion(lambda x: module(x).softmax(dim=1))
    maps = np.zeros((n_classes, size, size))
    means = np.zeros((n_classes, size, size, 3))
    for c in range(n_classes):
        chosen = np.flatnonzero(targets == c)[:per_class]
        if not len(chosen):
            continue
        x = normalize(torch.from_numpy(pixels[chosen]).permute(0, 3, 1, 2), model_input)
        with torch.no_grad():
            attribution = occlusion.attribute(
                x,
                target=c,
                sliding_window_shapes=(3, patch, patch),
                strides=(3, max(1, patch // 2), max(1, patch // 2)),
                baselines=0.0,
                perturbations_per_eval=32,
            )
        maps[c] = attribution.clamp_min(0).mean(dim=(0, 1)).numpy()
        means[c] = pixels[chosen].mean(axis=0) / 255.0
    return maps, means


def region_share(maps: np.ndarray, regions: dict) -> dict[str, list[float]]:
    """Per region and class: mean attribution inside the region ÷ mean attribution over the image (1 = average)."""
    size = maps.shape[1]
    shares = {}
    for name, boxes in regions.items():
        inside = box_mask(boxes, size, size)
        shares[name] = [float(m[inside].mean() / m.mean()) if m.mean() > 0 else 0.0 for m in maps]
    return shares


def residual_in_view(raw: np.ndarray, targets: np.ndarray, visible: np.ndarray, names: list[str], path) -> dict:
    """What the field of view leaves of the frames: per class, the share of its test images with any frame or
    overlay pixel inside the view (Wilson interval), and residual_in_view.png — per class, where those pixels
    are (share of its images), frame and overlay apart, and the difference between classes."""
    frame = np.stack([frame_pixels(r) & visible for r in raw])
    overlay = np.stack([overlay_pixels(r) for r in raw]) & visible & ~frame  # the frame found once, above
    rows = {}
    maps = []
    for k, name in enumerate(names):
        members = targets == k
        if not members.any():
            continue
        hit = int(np.sum((frame[members] | overlay[members]).any(axis=(1, 2))))
        rows[name] = {
            "images": int(members.sum()),
            "with_residual": hit,
            "ci": wilson_interval(hit, int(members.sum())),
        }
        maps.append((name, frame[members].mean(axis=0), overlay[members].mean(axis=0)))
    fig, axes = plt.subplots(
        2, len(maps) + 1, figsize=(2.2 * (len(maps) + 1), 4.6), squeeze=False, layout="constrained"
    )
    for col, (name, f, o) in enumerate(maps):
        for row, (values, what) in enumerate(((f, "frame"), (o, "overlay"))):
            axes[row, col].imshow(values, vmin=0, vmax=max(0.05, float(values.max())), cmap="magma")
            axes[row, col].set_title(f"{name}: {what}", fontsize=7)
    both = np.stack([f + o for _, f, o in maps])
    axes[0, -1].imshow(both.max(axis=0) - both.min(axis=0), cmap="viridis")
    axes[0, -1].set_title("largest difference\nbetween classes", fontsize=7)
    axes[1, -1].imshow(visible, cmap="gray", vmin=0, vmax=1)
    axes[1, -1].set_title("the field of view", fontsize=7)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("Frame and overlay pixels left inside the field of view (share of each class's test images)")
    save_figure(fig, path)
    return {"per_class": rows, "figure": Path(path).name}


WEIGHT_GRID = 16  # the baseline map's cells per side


def mark_grid(image: np.ndarray, grid: int = WEIGHT_GRID) -> np.ndarray:
    """grid x grid: the share of each cell of an HWC image (as the model sees it) that is frame or overlay."""
    marked = (frame_pixels(image) | overlay_pixels(image)).astype(np.float64)
    rows = np.arange(marked.shape[0]) * grid // marked.shape[0]
    cols = np.arange(marked.shape[1]) * grid // marked.shape[1]
    sums, counts = np.zeros((grid, grid)), np.zeros((grid, grid))
    np.add.at(sums, (rows[:, None], cols[None, :]), marked)
    np.add.at(counts, (rows[:, None], cols[None, :]), 1.0)
    return sums / np.maximum(counts, 1.0)


def baseline_map(grids: np.ndarray, splits: np.ndarray, labels: np.ndarray, names: list[str], path) -> dict:
    """Where the frame and overlays the model sees tell the class: a logistic regression (train split) on each
    image's mark_grid, its test accuracy with a Wilson interval, and its weights as a map per class
    (baseline_weights.png: red, marks there speak for the class; blue, against)."""
    from sklearn.linear_model import LogisticRegression

    train, test = splits == "train", splits == "test"
    flat = grids.reshape(len(grids), -1)
    model = LogisticRegression(C=0.1, max_iter=3000).fit(flat[train], labels[train])
    correct = int(np.sum(model.predict(flat[test]) == labels[test]))
    weights = model.coef_ if len(model.classes_) > 2 else np.concatenate([-model.coef_, model.coef_])
    shown = [names[k] for k in model.classes_]
    limit = float(np.abs(weights).max()) or 1.0
    fig, axes = plt.subplots(1, len(shown), figsize=(2.3 * len(shown), 2.8), squeeze=False, layout="constrained")
    for ax, name, w in zip(axes[0], shown, weights, strict=True):
        image = ax.imshow(w.reshape(grids.shape[1:]), cmap="RdBu_r", vmin=-limit, vmax=limit)
        ax.set_title(name, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="weight")
    fig.suptitle(f"Where the frame and overlays tell the class ({grids.shape[1]} x {grids.shape[2]} grid)", fontsize=9)
    save_figure(fig, path)
    return {
        "accuracy": correct / int(test.sum()),
        "accuracy_ci": wilson_interval(correct, int(test.sum())),
        "grid": int(grids.shape[1]),
        "figure": Path(path).name,
    }


OVERLAY_PLACES = ("bottom-left-box", "top-left-text")  # where devices draw boxes and text (strips hold tissue)


def overlay_like(thumbs: np.ndarray) -> np.ndarray:
    """Pixels that look like an overlay rather than tissue: green (a position box), or grey, white or black (text,
    covered boxes, the frame). Tissue, dye and blood are saturated reds, pinks and blues."""
    return pixel_rules.overlay_or_frame(thumbs)


def baseline_places(regions: dict) -> dict:
    """The overlay places among the audited regions (and boxes of the user's own) the baseline looks into, pooled
    by place; its histogram of overlay colours looks at the whole view."""
    return {n: b for n, b in regions.items() if n in OVERLAY_PLACES or n not in REGIONS} or regions


OVERLAY_LEVELS = 16  # the baseline's histogram of overlay grey levels (and green), wherever they fall


def baseline_features(pixels: np.ndarray, places: np.ndarray) -> np.ndarray:
    """One HWC image as the shortcut baseline sees it: where it is frame (and frame or overlay), and its
    overlay-coloured pixels inside `places` (HxW bool), tissue blanked, each pooled to a coarse grid; and, for
    overlays that move (text, icons at varying places), the share of the image in each overlay colour wherever it
    falls: bright grey and white by level, green."""
    keep = places & overlay_like(pixels)
    only_overlays = (pixels * keep[..., None]).astype(np.float32)[None]
    colour = np.concatenate([pooled(only_overlays[..., c]) for c in range(3)], axis=1)
    bright = places & pixel_rules.grey(pixels, pixel_rules.OVERLAY_GREY)
    levels = np.histogram(pixels[bright].mean(axis=-1), OVERLAY_LEVELS, (pixel_rules.OVERLAY_GREY, 256))[0]
    anywhere = np.r_[levels, (places & pixel_rules.green(pixels)).sum()] / places.size
    return np.concatenate([colour, frame_features(pixels[None]), anywhere[None]], axis=1)[0]


def seen_features(image: np.ndarray, in_places: np.ndarray) -> np.ndarray:
    """baseline_features of one image as the model sees it: pooled inside the overlay places (`in_places`), the
    histogram of overlay colours over the whole image (overlays that move fall anywhere)."""
    histogram = OVERLAY_LEVELS + 1  # baseline_features ends with the levels and the green share
    inside, anywhere = baseline_features(image, in_places), baseline_features(image, np.ones_like(in_places))
    return np.r_[inside[:-histogram], anywhere[-histogram:]]


def shortcut_baseline(features: np.ndarray, splits: np.ndarray, labels: np.ndarray, places: list[str]) -> dict:
    """A logistic regression on baseline_features of the images as the model sees them (its mask and field of
    view applied): the frame and the overlay places, tissue blanked. Trained on the train split, tested on the
    test split."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train, test = splits == "train", splits == "test"
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=3000)).fit(
        features[train], labels[train]
    )
    predicted = model.predict(features[test])
    correct = int(np.sum(predicted == labels[test]))
    return {
        "accuracy": correct / int(test.sum()),
        "accuracy_ci": wilson_interval(correct, int(test.sum())),
        "f1_macro": float(macro_f1(labels[test], predicted, present_classes(labels[test]))),
        "chance": float(np.max(np.bincount(labels[test])) / test.sum()),
        "regions": places,
    }
