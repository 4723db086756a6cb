"""The audit's verdict and report: what the model depends on, said first, with effect sizes and p-values; the
report's tables and figures (masking examples, frame swaps, occlusion maps). The measurements are in audit.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kvasir_mobileone.data.regions import FILLS, mask_pixels
from kvasir_mobileone.evaluation.audit import ALPHA, VERDICT_FILL
from kvasir_mobileone.evaluation.frames import describe_predictability
from kvasir_mobileone.io import markdown_table, pyplot, save_figure, write_text
from kvasir_mobileone.runs import AuditFolder

plt = pyplot()


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
    """The audit's verdict in words, at the top of its report: what the model depends on, then the view, the frame
    swap, the proposed next run and what the inputs still allow."""
    lines = [region_verdict(result), *view_lines(result), *swap_lines(result.get("frame_swap", {}))]
    remedy = result.get("proposed_fit") or {}
    if remedy.get("command"):
        lines.append(f"Proposed next run ({remedy['why']}): `{remedy['command']}`")
    return "\n\n".join(lines + remaining_lines(result))


def region_verdict(result: dict) -> str:
    """The bold first line: the regions the model depends on, or that it follows the frame, or neither."""
    depends = [r for r in result["regions"] if r["depends"]]
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
        return f"**Verdict: the model depends on {', '.join(by_region)}** — {effects}."
    if result.get("frame_swap", {}).get("follows"):
        return (
            "**Verdict: the model follows the frame** (no single audited region lowered accuracy significantly when "
            "filled with tissue colour, but a swapped frame changes its answers: see the frame swap below)."
        )
    return (
        "**Verdict: no dependence on any audited region** (filling no region with tissue colour lowered "
        f"accuracy significantly, Holm-adjusted p < {ALPHA})."
    )


def view_lines(result: dict) -> list[str]:
    """What the model never sees, the field of view proposed from the data, a black patch read as a signal."""
    lines = []
    unseen = sorted({r["region"] for r in result["regions"] if r.get("hidden_share", 0.0) >= 0.99})
    if unseen:
        lines.append(
            f"{', '.join(unseen)} lie inside what the model never sees (its trained mask or field of view): their "
            "drops are 0 by construction. The frame swap and the baseline below measure what is left."
        )
    proposed = result.get("proposed_view") or {}
    if proposed.get("file"):
        lines.append(
            f"The common field of view chosen from this run's training images (--data.view_quantile auto): "
            f"{proposed['file']} ({100 * proposed['fraction']:.1f}% of the input, quantile {proposed['quantile']:g}, "
            f"overlays {proposed['overlays']}; derived from the training images this audit read, as the proposed next "
            "run below derives it from its split)."
        )
    elif proposed.get("reason"):
        lines.append(f"No common field of view could be chosen from the data: {proposed['reason']}")
    black = [r["region"] for r in result["regions"] if r["significant"] and r["fill"] != VERDICT_FILL]
    if black:
        lines.append(
            f"A black patch over {', '.join(black)} also changes predictions: the model reads a black box "
            "there as a signal (as a covered ScopeGuide box would be)."
        )
    return lines


def swap_lines(swap: dict) -> list[str]:
    """The frame swap's finding in words (nothing when it was not measured)."""
    lines = []
    if swap.get("status") == "measured":
        control = swap.get("donor_class_in_control")
        lines.append(
            f"Frame swap (another class's frame and overlays pasted over each test image's tissue): "
            f"{swap['follow_donor']} of {swap['n']} predictions take the donor's class (with a frame of their own "
            f"class pasted instead: {control}; as is: {swap['donor_class_as_is']}), McNemar p = "
            f"{swap['p_value']:.2g} against the own-class paste: "
            + (
                "**the predictions follow the frame**."
                if swap["follows"]
                else "the predictions do not follow the frame."
            )
        )
        if swap.get("pasting_disturbs"):
            lines.append(
                "Pasting a frame of the image's own class lowers accuracy by "
                f"{points(swap['control_accuracy_drop'], swap['control_accuracy_drop_ci'])} points: the paste "
                "itself disturbs the model (seams, fills), whatever class the frame carries."
            )
    return lines


def remaining_lines(result: dict) -> list[str]:
    """What the inputs still allow: frame or overlay left inside the view, the shortcut baseline and its map."""
    baseline = result["shortcut_baseline"]
    lines = []
    residual = (result.get("residual_in_view") or {}).get("per_class")
    if residual:
        shares = ", ".join(
            f"{name} {100 * r['with_residual'] / r['images']:.0f}% [{100 * r['ci'][0]:.0f}, {100 * r['ci'][1]:.0f}]"
            for name, r in residual.items()
        )
        lines.append(
            f"Inside the field of view, frame or overlay pixels remain in these shares of each class's test images: "
            f"{shares} ({result['residual_in_view']['figure']} shows where): what the inputs still allow, beside "
            "what the model uses (the regions and the swap above)."
        )
    lines.append(
        "Shortcut baseline (frame and overlays only, tissue blanked): "
        f"{points(baseline['accuracy'], baseline['accuracy_ci'])}% accuracy against the network's "
        f"{100 * result['accuracy']:.1f}% and {100 * baseline['chance']:.1f}% for the majority class: "
        f"{BASELINE_FINDINGS[baseline_finding(baseline, result['accuracy'])]}"
    )
    spatial = result.get("baseline_map")
    if spatial:
        lines.append(
            f"Where it reads the class: {spatial['figure']}, the weights of a logistic regression on a "
            f"{spatial['grid']} x {spatial['grid']} grid of the frame and overlay pixels the model sees "
            f"({points(spatial['accuracy'], spatial['accuracy_ci'])}% on the test split)."
        )
    return lines


def write_audit(
    out_dir, result, masking, pixels, targets, base_pred, maps, mean_images, names, regions, swap_examples
) -> None:
    """audit.json, the audit's figures and its report.md."""
    folder = AuditFolder(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    folder.write_result(result)
    examples = []
    for r in masking:
        if r["changed"] and r["fill"] == FILLS[0]:
            name = f"examples_{r['region']}.png"
            plot_examples(pixels, r, targets, base_pred, names, regions[r["region"]], out_dir / name)
            examples.append(f"![{r['region']}]({name})")
    plot_occlusion(maps, mean_images, names, folder.occlusion_png)
    if result["frame_swap"].get("status") == "measured":
        plot_swaps(swap_examples, folder.frame_swap_png)
    write_text(folder.report, audit_markdown(result, names, examples, folder))


def masking_table(result: dict) -> str:
    return markdown_table(
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


def swap_section(swap: dict, folder: AuditFolder) -> str:
    """The report's frame-swap section ("" when the swap was not measured)."""
    if swap.get("status") != "measured":
        return ""
    return (
        "\n\n## Frame swap\n\nEach test image's tissue under the frame (near-black joined to the border) and "
        "overlays of a test image of another class, then the model's own mask. Predictions of the donor's class: "
        f"{swap['follow_donor']} of {swap['n']} [{100 * swap['follow_donor_ci'][0]:.1f}%, "
        f"{100 * swap['follow_donor_ci'][1]:.1f}%] swapped, {swap['donor_class_as_is']} as is (McNemar p = "
        f"{swap['p_value']:.3g}); accuracy change {points(swap['accuracy_drop'], swap['accuracy_drop_ci'])} points "
        f"(as is minus swapped).\n\n![frame swap]({folder.frame_swap_png.name})"
    )


def audit_markdown(result: dict, names: list[str], examples: list[str], folder: AuditFolder) -> str:
    """report.md: the verdict, then each measurement with its method and figure."""
    table = masking_table(result)
    shares = result["occlusion_region_share"]
    share_table = markdown_table(["region", *names], [[k, *(f"{v:.2f}" for v in vals)] for k, vals in shares.items()])
    census_table = markdown_table(
        ["class", "green box", "black box", "text top-left"],
        [[c, *(f"{100 * v:.0f}%" for v in found.values())] for c, found in result["census"].items()],
    )
    baseline = result["shortcut_baseline"]
    lo, hi = baseline["accuracy_ci"]
    return (
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
        + swap_section(result["frame_swap"], folder)
        + "\n\n## Shortcut baseline\n\nOn the images as the model sees them, a logistic regression on where each "
        "image is frame, and on 16 × 16 colour thumbnails of the overlay places "
        f"({', '.join(baseline['regions'])}) in which only green, grey, white and black pixels are kept (tissue "
        f"blanked), trained on the train split: {100 * baseline['accuracy']:.1f}% [{100 * lo:.1f}, "
        f"{100 * hi:.1f}] on the test split (macro-F1 {baseline['f1_macro']:.3f}); majority class "
        f"{100 * baseline['chance']:.1f}%.\n\n## Overlay census (all images of the split, as they are)\n\n"
        f"{census_table}\n\n## Frame maps (all images of the split, as they are)\n\n"
        f"{describe_predictability(result['frame_maps'])}\n\n![frame maps]({folder.frame_maps_png.name})"
    )


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
