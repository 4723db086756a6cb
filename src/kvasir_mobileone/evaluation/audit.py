"""`kvasir audit`: does the model look at the tissue, or at the overlays endoscopy frames carry?

Checks on the run's test images, as the model sees them (its trained mask and field of view applied): predictions
again with each named region masked (two fills); a frame swap (another class's frame and overlays pasted over the
tissue: do the predictions follow the frame?); occlusion sensitivity per class (captum); a shortcut baseline (a
linear model that sees only the frame and the overlay regions); and, on the images as they are, an overlay census
and frame maps per class. The verdict names what the model depends on, with effect size and p-value."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from kvasir_mobileone.data import pixels as pixel_rules
from kvasir_mobileone.data.field_of_view import swap_frame
from kvasir_mobileone.data.regions import FILLS, REGIONS, mask_pixels
from kvasir_mobileone.data.transforms import normalize
from kvasir_mobileone.evaluation.frames import describe_predictability, frame_features, pooled
from kvasir_mobileone.evaluation.intervals import paired_difference
from kvasir_mobileone.evaluation.metrics import macro_f1, present_classes
from kvasir_mobileone.evaluation.stats import mcnemar, wilson_interval
from kvasir_mobileone.extras import require
from kvasir_mobileone.images import box_mask, decode_resized, hide
from kvasir_mobileone.io import markdown_table, pyplot, save_figure, write_text
from kvasir_mobileone.runs import AuditFolder

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
    seeded), then the model's own mask: do the predictions follow the donor's class? McNemar on "predicts the
    donor's class", swapped against as is; the accuracy change with its paired interval."""
    present = np.unique(targets)
    if len(present) < 2:
        return {"status": "too few", "n": int(len(targets))}
    rng = np.random.default_rng(seed)
    donors = []
    for target in targets:
        other = rng.choice(present[present != target])
        donors.append(int(rng.choice(np.flatnonzero(targets == other))))
    donors = np.array(donors)
    hidden = model_input.hidden()
    swapped = np.stack([hide(swap_frame(raw[i], raw[j]), hidden) for i, j in enumerate(donors)])
    predicted = predict_pixels(module, swapped, model_input).argmax(axis=1)
    donor_class = targets[donors]
    follow = mcnemar(predicted == donor_class, base_pred == donor_class)  # A = swapped, B = as is
    diff = paired_difference(targets, base_pred, predicted, n_resamples, seed)
    follows = int(np.sum(predicted == donor_class))
    return {
        "status": "measured",
        "n": int(len(targets)),
        "follow_donor": follows,
        "follow_donor_ci": wilson_interval(follows, len(targets)),
        "donor_class_as_is": int(np.sum(base_pred == donor_class)),
        "p_value": follow["p_value"],
        "follows": bool(follow["p_value"] < ALPHA and follows > int(np.sum(base_pred == donor_class))),
        "accuracy_drop": diff["accuracy_difference"],
        "accuracy_drop_ci": diff["accuracy_difference_ci"],
        "donors": donors.tolist(),
        "swapped_predicted": predicted.tolist(),
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


OVERLAY_PLACES = ("bottom-left-box", "top-left-text")  # where devices draw boxes and text (strips hold tissue)


def overlay_like(thumbs: np.ndarray) -> np.ndarray:
    """Pixels that look like an overlay rather than tissue: green (a position box), or grey, white or black (text,
    covered boxes, the frame). Tissue, dye and blood are saturated reds, pinks and blues."""
    return pixel_rules.overlay_or_frame(thumbs)


def baseline_places(regions: dict) -> dict:
    """The overlay places among the audited regions (and boxes of the user's own) the baseline looks into."""
    return {n: b for n, b in regions.items() if n in OVERLAY_PLACES or n not in REGIONS} or regions


def baseline_features(pixels: np.ndarray, places: np.ndarray) -> np.ndarray:
    """One HWC image as the shortcut baseline sees it: where it is frame (and frame or overlay), and its
    overlay-coloured pixels inside `places` (HxW bool), tissue blanked, each pooled to a coarse grid."""
    keep = places & overlay_like(pixels)
    only_overlays = (pixels * keep[..., None]).astype(np.float32)[None]
    colour = np.concatenate([pooled(only_overlays[..., c]) for c in range(3)], axis=1)
    return np.concatenate([colour, frame_features(pixels[None])], axis=1)[0]


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


def points(value: float, ci) -> str:
    return f"{100 * value:.1f} [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


BASELINE_FINDINGS = {
    "shortcut": "**what the model sees of the frame and overlays predicts the class as well as the network: a "
    "shortcut is open to it.**",
    "partial": "**what the model sees of the frame and overlays predicts the class above the majority rate (less "
    "well than the network): a shortcut is open to it for part of the classes.**",
    "little": "what the model sees of the frame and overlays predicts little (no better than the majority class, "
    "within the interval).",
    "unknown": "too few test images to tell: the baseline's interval spans both the majority rate and the network's "
    "accuracy.",
}


def baseline_finding(baseline: dict, network_accuracy: float) -> str:
    """A key of BASELINE_FINDINGS from the baseline's 95% interval: above the majority rate when its lower bound is
    above it, as good as the network when its upper bound reaches the network's accuracy."""
    low, high = baseline["accuracy_ci"]
    above, reaches = low > baseline["chance"], high >= network_accuracy
    if above:
        return "shortcut" if reaches else "partial"
    return "unknown" if reaches else "little"


def verdict(result: dict) -> str:
    depends = [r for r in result["regions"] if r["depends"]]
    baseline = result["shortcut_baseline"]
    lines = []
    if depends:
        by_region: dict[str, dict] = {}
        for r in depends:
            by_region[r["region"]] = r
        effects = "; ".join(
            f"{name} (filled with tissue colour: accuracy −{points(r['accuracy_drop'], r['accuracy_drop_ci'])} points, "
            f"Holm p = {r['p_holm']:.2g}; "
            f"hit most: {', '.join(sorted(r['classes_losing'], key=r['classes_losing'].get)[:2]) or '—'})"
            for name, r in by_region.items()
        )
        lines.append(f"**Verdict: the model depends on {', '.join(by_region)}** — {effects}.")
    elif result.get("frame_swap", {}).get("follows"):
        lines.append(
            "**Verdict: the model follows the frame** (no single audited region lowered accuracy significantly when "
            "filled with tissue colour, but a swapped frame changes its answers: see the frame swap below)."
        )
    else:
        lines.append(
            "**Verdict: no dependence on any audited region** (filling no region with tissue colour lowered "
            f"accuracy significantly, Holm-adjusted p < {ALPHA})."
        )
    unseen = sorted({r["region"] for r in result["regions"] if r.get("hidden_share", 0.0) >= 0.99})
    if unseen:
        lines.append(
            f"{', '.join(unseen)} lie inside what the model never sees (its trained mask or field of view): their "
            "drops are 0 by construction. The frame swap and the baseline below measure what is left."
        )
    proposed = result.get("proposed_view") or {}
    if proposed.get("file"):
        lines.append(
            f"Proposed: a common field of view of this run's training images, {proposed['file']} "
            f"({100 * proposed['fraction']:.1f}% of the input): `kvasir fit ... --data.field_of_view "
            f"{proposed['file']}`."
        )
    elif proposed.get("reason"):
        lines.append(f"No common field of view could be proposed: {proposed['reason']}")
    black = [r["region"] for r in result["regions"] if r["significant"] and r["fill"] != VERDICT_FILL]
    if black:
        lines.append(
            f"A black patch over {', '.join(black)} also changes predictions: the model reads a black box "
            "there as a signal (as a covered ScopeGuide box would be)."
        )
    swap = result.get("frame_swap", {})
    if swap.get("status") == "measured":
        lines.append(
            f"Frame swap (another class's frame and overlays pasted over each test image's tissue): "
            f"{swap['follow_donor']} of {swap['n']} predictions take the donor's class (as is: "
            f"{swap['donor_class_as_is']}), McNemar p = {swap['p_value']:.2g}: "
            + (
                "**the predictions follow the frame** (`--data.field_of_view common` gives every frame the same "
                "outline)."
                if swap["follows"]
                else "the predictions do not follow the frame."
            )
        )
    lines.append(
        "Shortcut baseline (frame and overlays only, tissue blanked): "
        f"{points(baseline['accuracy'], baseline['accuracy_ci'])}% accuracy against the network's "
        f"{100 * result['accuracy']:.1f}% and {100 * baseline['chance']:.1f}% for the majority class: "
        f"{BASELINE_FINDINGS[baseline_finding(baseline, result['accuracy'])]}"
    )
    return "\n\n".join(lines)


def write_audit(
    out_dir, result, masking, pixels, targets, base_pred, maps, mean_images, names, regions, swap_examples
) -> None:
    folder = AuditFolder(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    folder.write_result(result)
    table = markdown_table(
        [
            "region",
            "fill",
            "accuracy drop (points) [95% CI]",
            "macro-F1 drop [95% CI]",
            "right only unmasked / masked",
            "McNemar p (Holm)",
            "depends",
            "classes losing recall",
        ],
        [
            [
                r["region"],
                r["fill"],
                points(r["accuracy_drop"], r["accuracy_drop_ci"]),
                f"{r['f1_macro_drop']:+.4f} [{r['f1_macro_drop_ci'][0]:+.4f}, {r['f1_macro_drop_ci'][1]:+.4f}]",
                f"{r['right_only_unmasked']} / {r['right_only_masked']}",
                f"{r['p_value']:.3g} ({r['p_holm']:.3g})",
                "**yes**" if r["depends"] else "no",
                ", ".join(f"{c} {100 * v:+.0f}" for c, v in sorted(r["classes_losing"].items(), key=lambda kv: kv[1]))
                or "—",
            ]
            for r in result["regions"]
        ],
    )
    shares = result["occlusion_region_share"]
    share_table = markdown_table(["region", *names], [[k, *(f"{v:.2f}" for v in vals)] for k, vals in shares.items()])
    census_table = markdown_table(
        ["class", "green box", "black box", "text top-left"],
        [[c, *(f"{100 * v:.0f}%" for v in found.values())] for c, found in result["census"].items()],
    )
    baseline = result["shortcut_baseline"]
    lo, hi = baseline["accuracy_ci"]
    examples = []
    for r in masking:
        if r["changed"] and r["fill"] == FILLS[0]:
            name = f"examples_{r['region']}.png"
            plot_examples(pixels, r, targets, base_pred, names, regions[r["region"]], out_dir / name)
            examples.append(f"![{r['region']}]({name})")
    plot_occlusion(maps, mean_images, names, folder.occlusion_png)
    swap = result["frame_swap"]
    swap_section = (
        "\n\n## Frame swap\n\nEach test image's tissue under the frame (near-black joined to the border) and "
        "overlays of a test image of another class, then the model's own mask. Predictions of the donor's class: "
        f"{swap['follow_donor']} of {swap['n']} [{100 * swap['follow_donor_ci'][0]:.1f}%, "
        f"{100 * swap['follow_donor_ci'][1]:.1f}%] swapped, {swap['donor_class_as_is']} as is (McNemar p = "
        f"{swap['p_value']:.3g}); accuracy change {points(swap['accuracy_drop'], swap['accuracy_drop_ci'])} points "
        f"(as is minus swapped).\n\n![frame swap]({folder.frame_swap_png.name})"
        if swap.get("status") == "measured"
        else ""
    )
    if swap.get("status") == "measured":
        plot_swaps(swap_examples, folder.frame_swap_png)
    report = (
        f"# Shortcut audit: {result['run']}\n\n{result['verdict']}\n\n"
        f"n = {result['n']} test images; accuracy as is {100 * result['accuracy']:.2f}%."
        + (
            f" The model was trained with these boxes masked: {result['trained_mask']}."
            if result["trained_mask"]
            else ""
        )
        + (
            f" It sees {100 * result['field_of_view']['fraction']:.1f}% of its input (--data.field_of_view); the "
            "checks below run on the images as it sees them."
            if result.get("field_of_view")
            else ""
        )
        + "\n\n## Region masking\n\nEach region is filled with the frame's black, and with the image's mean tissue "
        "colour (which does not look like a black box); the drop is accuracy as is minus accuracy masked, with a "
        "paired BCa bootstrap interval; McNemar's exact test on the images whose correctness changed, Holm-adjusted "
        f"over the regions of each fill. The verdict uses the tissue-colour fill.\n\n{table}\n"
        + "\n".join(examples)
        + "\n\n## Occlusion sensitivity\n\nMean attribution inside each region ÷ mean over the image, per true class "
        "(captum Occlusion: a patch of the dataset-mean colour slid over the image; > 1: the region holds more than "
        f"its share of the evidence).\n\n{share_table}\n![occlusion]({folder.occlusion_png.name})"
        + swap_section
        + "\n\n## Shortcut baseline\n\nOn the images as the model sees them, a logistic regression on where each "
        "image is frame, and on 16 × 16 colour thumbnails of the overlay places "
        f"({', '.join(baseline['regions'])}) in which only green, grey, white and black pixels are kept (tissue "
        f"blanked), trained on the train split: {100 * baseline['accuracy']:.1f}% [{100 * lo:.1f}, "
        f"{100 * hi:.1f}] on the test split (macro-F1 {baseline['f1_macro']:.3f}); majority class "
        f"{100 * baseline['chance']:.1f}%.\n\n## Overlay census (all images of the split, as they are)\n\n"
        f"{census_table}\n\n## Frame maps (all images of the split, as they are)\n\n"
        f"{describe_predictability(result['frame_maps'])}\n\n![frame maps]({folder.frame_maps_png.name})"
    )
    write_text(folder.report, report)


def plot_examples(pixels, row, targets, base_pred, names, boxes, path) -> Path:
    chosen = row["changed"][:4]
    fig, axes = plt.subplots(2, len(chosen), figsize=(2.6 * len(chosen), 5.4), squeeze=False)
    for col, i in enumerate(chosen):
        masked = mask_pixels(pixels[i], boxes, row["fill"])
        for ax, image, label in (
            (axes[0, col], pixels[i], names[base_pred[i]]),
            (axes[1, col], masked, names[row["masked_predicted"][i]]),
        ):
            ax.imshow(image)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"predicted {label}", fontsize=8)
        axes[0, col].set_xlabel(f"true: {names[targets[i]]}", fontsize=8)
    axes[0, 0].set_ylabel("as is")
    axes[1, 0].set_ylabel(f"{row['region']} masked")
    fig.suptitle(f"Predictions that change when {row['region']} is masked ({row['fill']})")
    return save_figure(fig, path)


def plot_swaps(examples: list[tuple[np.ndarray, str, np.ndarray, str]], path) -> Path:
    """Up to four test images as the model sees them (top) and under another class's frame (bottom), each with
    the model's prediction."""
    fig, axes = plt.subplots(2, len(examples), figsize=(2.6 * len(examples), 5.4), squeeze=False)
    for col, (as_is, said, swapped, said_swapped) in enumerate(examples):
        for ax, image, label in ((axes[0, col], as_is, said), (axes[1, col], swapped, said_swapped)):
            ax.imshow(image)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"predicted {label}", fontsize=8)
    axes[0, 0].set_ylabel("as is")
    axes[1, 0].set_ylabel("another class's frame")
    fig.suptitle("Frame swap: the tissue stays, the frame and overlays come from another class")
    return save_figure(fig, path)


def plot_occlusion(maps, mean_images, names, path) -> Path:
    fig, axes = plt.subplots(1, len(names), figsize=(2.6 * len(names), 3.2), squeeze=False)
    for ax, heat, image, name in zip(axes[0], maps, mean_images, names, strict=True):
        ax.imshow(image)
        ax.imshow(heat, cmap="inferno", alpha=0.6)
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("x (pixels)")
        ax.set_ylabel("y (pixels)")
    fig.suptitle("Occlusion sensitivity per true class over the class's mean image (bright: evidence)")
    return save_figure(fig, path)
