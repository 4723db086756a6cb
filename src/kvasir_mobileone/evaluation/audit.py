"""`kvasir audit`: does the model look at the tissue, or at the overlays endoscopy frames carry?

Four checks on the run's test images: predictions again with each named region masked (two fills), occlusion
sensitivity per class (captum), a shortcut baseline (a linear model that sees only the overlay regions), and an
overlay census per class. The verdict names the regions the model depends on, with effect size and p-value."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from kvasir_mobileone.data.regions import FILLS, REGIONS, mask_pixels
from kvasir_mobileone.data.transforms import normalize
from kvasir_mobileone.evaluation.intervals import paired_difference
from kvasir_mobileone.evaluation.metrics import macro_f1, present_classes
from kvasir_mobileone.evaluation.stats import wilson_interval
from kvasir_mobileone.images import black_out, box_mask, decode_resized
from kvasir_mobileone.io import markdown_table, pyplot, save_figure, write_json, write_text
from kvasir_mobileone.runs import REPORT_NAME

plt = pyplot()
ALPHA = 0.05
VERDICT_FILL = "mean"  # the fill that removes what a region shows without adding a black box
CENSUS_SIZE = 64  # px: enough to see a box and text, cheap to decode for every image
BASELINE_GRID = 16  # the shortcut baseline sees each image as a 16 x 16 colour thumbnail of its overlay regions


def load_pixels(data_dir: Path, paths: list[str], size: int, interpolation: str, what: str) -> np.ndarray:
    return np.stack([decode_resized(data_dir / p, size, interpolation) for p in tqdm(paths, desc=what, unit="img")])


def predict_pixels(module, pixels: np.ndarray, norm, batch_size: int = 64) -> np.ndarray:
    """Class probabilities of uint8 NHWC images, in fp32."""
    probs = []
    with torch.no_grad():
        for start in range(0, len(pixels), batch_size):
            batch = torch.from_numpy(pixels[start : start + batch_size]).permute(0, 3, 1, 2)
            probs.append(module(normalize(batch, norm)).float().softmax(dim=1).numpy())
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


def region_masking(module, norm, pixels, targets, regions, class_names, n_resamples, seed) -> tuple[list, np.ndarray]:
    """Per region and fill: the change in accuracy and macro-F1 (paired interval), McNemar, per-class recall."""
    base_pred = predict_pixels(module, pixels, norm).argmax(axis=1)
    base_recall = recall_per_class(targets, base_pred, len(class_names))
    rows = []
    for name, boxes in tqdm(regions.items(), desc="mask regions", unit="region"):
        for fill in FILLS:
            # the run's own trained mask stays black: the deployed model never sees anything else there
            masked = np.stack([black_out(mask_pixels(p, boxes, fill), norm.mask) for p in pixels])
            predicted = predict_pixels(module, masked, norm).argmax(axis=1)
            diff = paired_difference(targets, base_pred, predicted, n_resamples, seed)  # A = as is, B = masked
            change = recall_per_class(targets, predicted, len(class_names)) - base_recall
            rows.append(
                {
                    "region": name,
                    "fill": fill,
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


def occlusion_maps(module, norm, pixels, targets, n_classes: int, per_class: int) -> tuple[np.ndarray, np.ndarray]:
    """(per-class mean occlusion attribution HxW, per-class mean image HxWx3): where the evidence for the true
    class comes from. captum's Occlusion slides a patch (the dataset-mean colour) over the image in batches."""
    from captum.attr import Occlusion

    size = pixels.shape[1]
    patch = max(2, size // 8)
    occlusion = Occlusion(lambda x: module(x).softmax(dim=1))
    maps = np.zeros((n_classes, size, size))
    means = np.zeros((n_classes, size, size, 3))
    for c in range(n_classes):
        chosen = np.flatnonzero(targets == c)[:per_class]
        if not len(chosen):
            continue
        x = normalize(torch.from_numpy(pixels[chosen]).permute(0, 3, 1, 2), norm)
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


def overlay_pixels(thumbs: np.ndarray) -> np.ndarray:
    """Pixels that look like an overlay rather than tissue: green (a position box), or grey, white or black (text,
    covered boxes, the frame). Tissue, dye and blood are saturated reds, pinks and blues."""
    rgb = thumbs.astype(np.int32)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return ((g > r + 40) & (g > b + 40)) | (rgb.max(axis=-1) - rgb.min(axis=-1) < 40)


def shortcut_baseline(thumbs: np.ndarray, splits: np.ndarray, labels: np.ndarray, regions: dict) -> dict:
    """A logistic regression that sees only the overlays: the overlay places among the audited regions (and boxes
    of the user's own), and in them only overlay-coloured pixels, the tissue blanked. Trained on the train split,
    tested on the test split."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    size = thumbs.shape[1]
    places = {n: b for n, b in regions.items() if n in OVERLAY_PLACES or n not in REGIONS} or regions
    keep = box_mask([b for boxes in places.values() for b in boxes], size, size)[None] & overlay_pixels(thumbs)
    only_overlays = thumbs * keep[..., None]
    pool = size // BASELINE_GRID
    features = only_overlays.reshape(len(thumbs), BASELINE_GRID, pool, BASELINE_GRID, pool, 3).mean(axis=(2, 4))
    features = features.reshape(len(thumbs), -1)
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
        "regions": list(places),
    }


def points(value: float, ci) -> str:
    return f"{100 * value:.1f} [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


BASELINE_FINDINGS = {
    "shortcut": "**the overlays alone predict the class as well as the network: the dataset allows a shortcut.**",
    "partial": "**the overlays alone predict the class above the majority rate (less well than the network): the "
    "dataset allows a shortcut for part of it.**",
    "little": "the overlays alone predict little (no better than the majority class, within the interval).",
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
    else:
        lines.append(
            "**Verdict: no dependence on any audited region** (filling no region with tissue colour lowered "
            f"accuracy significantly, Holm-adjusted p < {ALPHA})."
        )
    black = [r["region"] for r in result["regions"] if r["significant"] and r["fill"] != VERDICT_FILL]
    if black:
        lines.append(
            f"A black patch over {', '.join(black)} also changes predictions: the model reads a black box "
            "there as a signal (as a covered ScopeGuide box would be)."
        )
    lines.append(
        f"Shortcut baseline (overlays only, tissue blanked): {points(baseline['accuracy'], baseline['accuracy_ci'])}% "
        f"accuracy against the network's {100 * result['accuracy']:.1f}% and {100 * baseline['chance']:.1f}% for the "
        f"majority class: {BASELINE_FINDINGS[baseline_finding(baseline, result['accuracy'])]}"
    )
    return "\n\n".join(lines)


def write_audit(out_dir, result, masking, pixels, targets, base_pred, maps, mean_images, names, regions) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "audit.json", result)
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
    plot_occlusion(maps, mean_images, names, out_dir / "occlusion.png")
    report = (
        f"# Shortcut audit: {result['run']}\n\n{result['verdict']}\n\n"
        f"n = {result['n']} test images; accuracy as is {100 * result['accuracy']:.2f}%."
        + (
            f" The model was trained with these boxes masked: {result['trained_mask']}."
            if result["trained_mask"]
            else ""
        )
        + "\n\n## Region masking\n\nEach region is filled with the frame's black, and with the image's mean tissue "
        "colour (which does not look like a black box); the drop is accuracy as is minus accuracy masked, with a "
        "paired BCa bootstrap interval; McNemar's exact test on the images whose correctness changed, Holm-adjusted "
        f"over the regions of each fill. The verdict uses the tissue-colour fill.\n\n{table}\n"
        + "\n".join(examples)
        + "\n\n## Occlusion sensitivity\n\nMean attribution inside each region ÷ mean over the image, per true class "
        "(captum Occlusion: a patch of the dataset-mean colour slid over the image; > 1: the region holds more than "
        f"its share of the evidence).\n\n{share_table}\n![occlusion](occlusion.png)\n\n"
        "## Shortcut baseline\n\nA logistic regression on 16 × 16 colour thumbnails of the overlay places "
        f"({', '.join(baseline['regions'])}), in which only green, grey, white and black pixels are kept (tissue "
        f"blanked), trained on the train split: {100 * baseline['accuracy']:.1f}% [{100 * lo:.1f}, "
        f"{100 * hi:.1f}] on the test split (macro-F1 {baseline['f1_macro']:.3f}); majority class "
        f"{100 * baseline['chance']:.1f}%.\n\n## Overlay census (all images of the split)\n\n{census_table}"
    )
    write_text(out_dir / REPORT_NAME, report)


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
