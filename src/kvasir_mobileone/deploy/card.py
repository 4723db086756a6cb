"""The model card that travels with a bundle: README.md in the Hugging Face model-card format, a timm-style
config.json and the unfused (training-time) weights, so that the folder can be published with
`huggingface_hub.upload_folder` as it is and fine-tuned again with timm."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import yaml

import kvasir_mobileone.pixels as pixel_rules
from kvasir_mobileone.data.catalog import Dataset, identify
from kvasir_mobileone.images import ModelInput
from kvasir_mobileone.io import atomic_path, markdown_table, write_text
from kvasir_mobileone.marks import INPAINT_RADIUS
from kvasir_mobileone.runs import CARD_NAME, CONFIG_NAME, UNFUSED_NAME

if TYPE_CHECKING:
    from kvasir_mobileone.deploy.runtime import Predictor

INTENDED_USE = (
    "Research on the classification of gastrointestinal endoscopy images (Kvasir v2 classes or the classes of the "
    "training folder). Research use only: not a medical device, not for diagnosis or any clinical decision."
)


def write_timm_config(path: Path, backbone, metadata: dict) -> Path:
    """timm's hub config.json, written by timm (save_config_for_hf) from the training-time backbone, with the
    pretrained_cfg its data config is resolved from set to the bundle's input: size, mean/std, interpolation, the
    whole frame (crop_pct 1)."""
    from timm.models._hub import save_config_for_hf

    model_input, names = ModelInput.from_dict(metadata["input"]), metadata["class_names"]
    backbone.pretrained_cfg = {
        **backbone.pretrained_cfg,
        "input_size": (3, model_input.image_size, model_input.image_size),
        "interpolation": model_input.interpolation,
        "mean": model_input.mean,
        "std": model_input.std,
        "crop_pct": 1.0,
        "crop_mode": "center",
        "num_classes": len(names),
    }
    with atomic_path(path) as tmp:
        save_config_for_hf(backbone, tmp, model_config={"label_names": names})  # a Path: older timm calls .open
    return path


def licence_header(dataset: Dataset | None) -> dict:
    """The card header's licence fields, from the dataset the run was trained on."""
    weights = " ImageNet weights of MobileOne come under Apple's licence."
    if dataset is None:
        return {
            "license": "other",
            "license_name": "unknown",
            "license_details": "Trained on a folder of images whose terms this tool does not know: state the data's "
            "licence before publishing." + weights,
        }
    if dataset.licence == "other":
        return {"license": "other", "license_name": "research-only", "license_details": dataset.terms + weights}
    return {"license": dataset.licence, "license_details": dataset.terms + weights}


def dataset_sentence(dataset: Dataset | None, data: dict) -> str:
    """Which data, which split: the folder's name (not the machine's path) and the dataset's citation."""
    folder = Path(data.get("data_dir") or "unknown").name
    if data.get("official_split"):
        split = f"the official split {Path(data['official_split']).stem}, fold {data.get('fold', 0)} as test"
    elif data.get("manifest"):
        split = f"the split of the manifest {Path(data['manifest']).name}"
    else:
        val, test = data.get("val_fraction", 0.1), data.get("test_fraction", 0.1)
        split = (
            f"a stratified {1 - val - test:.0%}/{val:.0%}/{test:.0%} split (seed {data.get('seed', '—')}; "
            "near-duplicates kept in one split)"
        )
    what = f"{dataset.title} ({dataset.terms} Cite: {dataset.citation})" if dataset else "an image folder"
    return f"Data: {what}, folder `{folder}`, {split}. "


def _pct(value) -> str:
    return "—" if value is None else f"{100 * value:.2f}%"


def _interval(ci) -> str:
    return f"[{100 * ci[0]:.2f}%, {100 * ci[1]:.2f}%]" if ci else ""


def card_text(metadata: dict, test_metrics: dict | None, run_config: dict) -> str:
    names, model_input = metadata["class_names"], ModelInput.from_dict(metadata["input"])
    data = run_config.get("data", {})
    model = run_config.get("model", {})
    pretrained = model.get("pretrained") or model.get("weights")
    dataset = identify(names, data.get("official_split"))
    header = {
        **licence_header(dataset),
        "library_name": "timm",
        "pipeline_tag": "image-classification",
        "tags": ["image-classification", "timm", "mobileone", "endoscopy", "kvasir", "medical-imaging", "onnx"],
        **({"datasets": [dataset.key]} if dataset else {}),
        "metrics": ["accuracy", "f1"],
    }
    if pretrained and not model.get("weights"):
        header["base_model"] = f"timm/{metadata['model_name']}.apple_in1k"
    front = f"---\n{yaml.safe_dump(header, sort_keys=False)}---\n"
    name, size = metadata["model_name"], model_input.image_size
    masked = list(model_input.mask_regions)
    sections = [
        front,
        f"# {name} for endoscopy images\n",
        f"A `{name}` (timm) classifier of {len(names)} classes: {', '.join(names)}. This folder holds the "
        f"reparameterized (fused) model in the files below, the training-time weights for fine-tuning with timm "
        f"(`{UNFUSED_NAME}`, `{CONFIG_NAME}`), and `metadata.json` (the input, checks and provenance).\n",
        files_section(metadata),
        f"## Intended use\n\n{INTENDED_USE}\n\n**Out of scope**: clinical use; images that are not endoscopy "
        "frames; classes other than those above (the model's top class is always one of them: read its "
        "out-of-distribution flag below); devices and hospitals unlike those of the training data without a new "
        "evaluation.\n",
        "## Training data and preprocessing\n\n"
        + dataset_sentence(dataset, data)
        + f"Input: RGB resized to {size} × {size} "
        f"({model_input.interpolation}), scaled to [0, 1] and normalized with mean {list(model_input.mean)} and "
        f"std {list(model_input.std)}"
        + (f"; the regions {masked} are set to black first (the model never saw them)" if masked else "")
        + (CLEAN_SENTENCE if model_input.clean else "")
        + (
            f"; everything outside the common field of view (`field_of_view.png`, white: seen; SHA-256 "
            f"`{model_input.view_sha256}`) is set to black, so every frame has the same outline"
            if model_input.field_of_view
            else ""
        )
        + f". Training: {'ImageNet-pretrained' if pretrained else 'from scratch'}, optimizer "
        f"{model.get('optimizer', '—')}, learning rate {model.get('lr', '—')}"
        + recipe_sentence(metadata.get("recipe") or {})
        + ".\n",
        evaluation_section(test_metrics, names),
        uncertainty_card_section(metadata.get("uncertainty"), (test_metrics or {}).get("uncertainty")),
    ]
    if metadata.get("int8"):
        int8 = metadata["int8"]
        sections.append(
            f"**int8 model ({int8.get('verdict', 'not judged')})**: {int8.get('reason', '')}. It agrees with fp32 "
            f"on {100 * int8['top1_agreement']:.2f}% of the {int8['images']} test images.\n"
        )
    sections.append(LIMITATIONS + audit_paragraph(metadata.get("audit") or {"status": "not audited"}))
    example = (Path(__file__).with_name("onnxruntime_example.py")).read_text().split('"""\n\n', 1)[1]
    sections.append(USAGE.format(name=name, unfused=UNFUSED_NAME, n=len(names), example=example))
    return "\n".join(sections)


def recipe_sentence(recipe: dict) -> str:
    """The recipe's ingredients and the teacher, as export recorded them (deploy/export.recipe_record)."""
    parts = [f"{name} {recipe[key]}" for key, name in RECIPE_NAMES.items() if recipe.get(key)]
    if recipe.get("augment"):
        parts.append(f"{recipe['augment']} augmentation")
    teacher = recipe.get("teacher")
    if teacher:
        checksum = f", SHA-256 `{teacher['sha256']}`" if teacher.get("sha256") else ""
        parts.append(
            f"distilled from `{teacher.get('name', 'a teacher')}` (`{teacher['source']}`{checksum}; weight "
            f"{recipe.get('distill_weight')}, temperature {recipe.get('distill_temperature')})"
        )
    if recipe.get("unlabeled"):
        frames = recipe["unlabeled"]
        parts.append(f"and on {frames['used']} unlabeled frames (of {frames['found']} found)")
    return "; " + ", ".join(parts) if parts else ""


# the recipe's ingredients, in the card's words
RECIPE_NAMES = {
    "ema": "EMA of the weights, decay",
    "label_smoothing": "label smoothing",
    "mixup": "Mixup alpha",
    "cutmix": "CutMix alpha",
    "drop_path": "drop path",
}


def files_section(metadata: dict) -> str:
    """The bundle's model files: what runs each, what it takes, how it was checked; and, for the on-device ones,
    what an app developer must do. Empty for metadata that lists no files (bundles made before the list)."""
    if not metadata.get("files"):
        return ""
    rows = [
        [f"`{f['file']}`", f["precision"], f["runtime"], f["input"], f["checked"] or "—"] for f in metadata["files"]
    ]
    text = "## Files\n\n" + markdown_table(["file", "precision", "runs on", "input", "checked"], rows) + "\n"
    if metadata.get("executorch"):
        text += (
            "\n**On a phone or tablet with ExecuTorch** (`model.pte`, XNNPACK): load it with ExecuTorch's Android or "
            "iOS runtime and feed the same float32 tensor as `model.onnx` (the preprocessing of the snippet below, "
            f"done in the app); the batch may be 1 to {metadata['executorch']['max_batch']} images.\n"
        )
    if metadata.get("coreml"):
        text += (
            "\n**On an iPhone, iPad or Mac with Core ML** (`model.mlpackage`): the preprocessing is inside the model. "
            "Give it the **whole frame**: with Vision, set `VNCoreMLRequest.imageCropAndScaleOption = .scaleFill`; "
            "Vision's default centre crop cuts off the sides of the frame, which the model saw in training. It "
            "answers `classLabel` and `classLabel_probs`. It was converted on Linux and its in-graph preprocessing "
            "checked in PyTorch against `kvasir predict`; the Core ML runtime itself was not run here: on a Mac, "
            f"check it with `{metadata['coreml']['check_on_mac']}`.\n"
        )
    return text


def audit_paragraph(audit: dict) -> str:
    """The shortcut audit's verdict for this checkpoint, or that none was run."""
    if audit["status"] == "not audited":
        return "\n**Shortcut audit: none was run on this model.** Run `kvasir audit RUN` and export again.\n"
    if audit["status"] == "stale":
        return "\n**Shortcut audit: the run's audit is of another checkpoint.** Run `kvasir audit RUN` again.\n"
    found = "; ".join(
        f"{d['region']} (accuracy −{100 * d['accuracy_drop']:.1f} points [{100 * d['accuracy_drop_ci'][0]:.1f}, "
        f"{100 * d['accuracy_drop_ci'][1]:.1f}] when filled with tissue colour, Holm p = {d['p_holm']:.2g})"
        for d in audit["depends"]
    )
    base = audit["baseline"]
    lines = [
        f"\n**Shortcut audit ({audit['n']} test images)**: "
        + (f"the model depends on {found}." if found else "no dependence on any audited region was found."),
        "Frame and overlays as the model sees them (shortcut baseline): "
        f"{100 * base['accuracy']:.1f}% [{100 * base['accuracy_ci'][0]:.1f}, {100 * base['accuracy_ci'][1]:.1f}] "
        f"against {100 * base['chance']:.1f}% for the majority class "
        f"({base['finding']}).",
    ]
    swap = audit.get("frame_swap")
    if swap:
        lines.append(
            f"Frame swap (another class's frame pasted over the tissue): {swap['follow_donor']} of {swap['n']} "
            f"answers took the frame's class, against {swap['donor_class_as_is']} as is (McNemar p = "
            f"{swap['p_value']:.2g}): the predictions {'follow' if swap['follows'] else 'do not follow'} the frame."
        )
    return " ".join(lines) + "\n"


def evaluation_section(test_metrics: dict | None, names: list[str]) -> str:
    if not test_metrics:
        return "## Evaluation\n\nNo test report was found beside the checkpoint: evaluate before use.\n"
    f1_ci = test_metrics.get("f1_macro_ci")
    table = markdown_table(
        ["metric", "value", "95% interval"],
        [
            ["accuracy", _pct(test_metrics.get("accuracy")), _interval(test_metrics.get("accuracy_ci"))],
            [
                "macro-F1",
                f"{test_metrics.get('f1_macro', 0):.4f}",
                f"[{f1_ci[0]:.4f}, {f1_ci[1]:.4f}]" if f1_ci else "",
            ],
            ["top-3 accuracy", _pct(test_metrics.get("top3")), ""],
            ["MCC", f"{test_metrics.get('mcc', 0):.4f}", ""],
        ],
    )
    matrix = test_metrics.get("confusion_matrix")
    confusion = (
        "\n\nConfusion matrix (rows: true class, columns: predicted):\n\n"
        + markdown_table(["true \\ predicted", *names], [[n, *row] for n, row in zip(names, matrix, strict=True)])
        if matrix
        else ""
    )
    return (
        f"## Evaluation\n\nOn the {test_metrics.get('n')} images of the run's test split (fp32). Accuracy "
        f"interval: Wilson; macro-F1: BCa bootstrap.\n\n{table}{confusion}\n"
    )


def uncertainty_card_section(found: dict | None, measured: dict | None) -> str:
    """What the bundle says besides its class, how each threshold was set and what the test measured."""
    head = "## I don't know: out-of-distribution flag, abstention, prediction sets\n\n"
    if not found:
        return head + "This bundle has no out-of-distribution detector: run `kvasir test RUN`, then export again.\n"
    fitted = found["fitted"]
    detector = found["detector"] + (f" (k = {found['k']})" if found["detector"] == "knn" else "")
    alone = found["detector"] == "input"
    source = (
        "the input check alone (each image's colour and texture statistics against the training images')"
        if alone
        else f"{detector} on the pooled features (the ONNX and ExecuTorch graphs' second output, `features`; its "
        "arrays in `uncertainty.npz`)"
    )
    lines = [
        f'`predict`, the page and the code below answer each image with its class, **"not sure"** or **"outside '
        f'the training data"**, and a prediction set. Out-of-distribution detector: {source}, fitted on '
        f"{fitted['train_images']} training images"
        + (
            ", and the input check (each image's colour and texture statistics against the training images'; "
            f"threshold {found['input_threshold']:.6g}), each at {_pct(fitted['rate_each'])}"
            if found.get("input_threshold") is not None and not alone
            else ""
        )
        + ". A frame with no picture (black, white, grey, one colour) is outside by definition. "
        + (
            f"The thresholds were set on {fitted['val_images']} val images for a {_pct(found['false_alarm'])} "
            "false-alarm rate."
            if found["ood_threshold"] is not None or found.get("input_threshold") is not None
            else f"No threshold: {fitted['val_images']} val images are too few for a {_pct(found['false_alarm'])} "
            "false-alarm rate, so nothing is flagged but frames with no picture."
        ),
        (
            f'Abstention: "not sure" below a top-class probability of {found["confidence_threshold"]:.4f}, the '
            f"lowest threshold whose binomial upper bound on the error of the answered val images is "
            f"{_pct(found['target_error'])} (selection with guaranteed risk)."
            if found["confidence_threshold"] is not None
            else f"Abstention: none (no threshold reached a {_pct(found['target_error'])} error bound on val)."
        ),
        f"Prediction sets: split-conformal APS at {_pct(found['coverage'])} coverage, calibrated on the val images.",
    ]
    if measured:
        ood, conf, sel = measured["ood"], measured["conformal"], measured["selective"]
        lines.append(
            f"Measured on the {ood['false_alarm']['n']} test images: flagged {_pct(ood['false_alarm']['rate'])} "
            f"{_interval(ood['false_alarm']['ci'])} (false alarms); of {ood['foreign_flagged']['n']} images that are "
            f"not endoscopy (photos, blank frames, noise) it flagged {_pct(ood['foreign_flagged']['rate'])} "
            f"{_interval(ood['foreign_flagged']['ci'])} (AUROC {ood['auroc']:.3f}); sets covered the true class of "
            f"{_pct(conf['coverage']['rate'])} {_interval(conf['coverage']['ci'])}, mean size {conf['mean_size']:.2f}"
            + (
                f"; the answered images ({_pct(sel['coverage']['rate'])}) had an error of "
                f"{_pct(sel['error_answered']['rate'])} {_interval(sel['error_answered']['ci'])}."
                if sel["threshold"] is not None and sel["error_answered"]
                else "."
            )
        )
    lines.append(
        "These guarantees hold for images like the val split only: another hospital, endoscope or protocol needs "
        "calibrating again, and no detector catches every foreign image. Core ML's graph gives probabilities alone "
        "(no flag)."
    )
    return head + "\n".join(lines) + "\n"


LIMITATIONS = """## Limitations

The test split comes from the same source as the training data: accuracy on other devices and hospitals is
unknown. Endoscopy frames carry overlays (position box, text, black frame) that a model can learn instead of
tissue: check with `kvasir audit`. Probabilities are calibrated only when `metadata.json` holds a temperature.
Small test sets give wide intervals: read them.

**Live use** (`kvasir watch`, the page's Live tab): this tool is not a medical device and no live answer may guide
a clinical decision. Before a feed from a real tower is watched, a clinic must check on its own tower and capture
path (a capture card, a network stream) that the frames reach the model as the training images were (colour,
size, no overlay the model was not trained with), the latency and the share of frames skipped on its own computer
(`kvasir benchmark`), and the answers against its own annotated examinations: the false-alarm rate of the
"outside the training data" flag holds only for frames like the val split's, and the live answer, smoothed with
the past frames only, follows a change of view with a lag.
"""

# what an app developer must reproduce for a model trained with --data.clean_frame inpaint (images.ModelInput.prepare)
CLEAN_SENTENCE = (
    "; before anything is set to black, each image's own frame and overlay marks inside the view are inpainted "
    "(`--data.clean_frame inpaint`). An app that feeds the ONNX or ExecuTorch file itself must do the same, at the "
    f"input size, after the resize: mark the near-black pixels (brightest channel below {pixel_rules.DARK}) joined "
    f"to the border and the overlay-coloured ones (green over red and blue by more than {pixel_rules.GREEN_MARGIN}; "
    f"grey, channels within {pixel_rules.GREY_SPREAD} of each other and every one at least "
    f"{pixel_rules.OVERLAY_GREY}), grow the frame and the overlay patches of at least f x f pixels by f = max(1, "
    "size // 32) pixels (8-neighbour) and the others by one, and fill the marks inside the view with OpenCV's "
    f"`cv2.inpaint(image, marks, {INPAINT_RADIUS}, cv2.INPAINT_TELEA)`, the marks outside it first set to the mean "
    "colour of the unmarked pixels; `kvasir predict` and its runtimes do this for you "
    "(`kvasir_mobileone.marks.clean_marks`)"
)

USAGE = """## How to use

With plain onnxruntime (and Pillow, numpy): the preprocessing below is `kvasir predict`'s (reduced-scale JPEG
decode, upright 8-bit RGB, one resize, the masked regions and everything outside the field of view black,
mean/std), for the 8-bit RGB or greyscale frames
endoscopes write; feed the whole frame, never a centre crop.

```python
{example}```

With timm, the training-time model, e.g. to fine-tune it (fuse it with `timm.utils.model.reparameterize_model`
for inference):

```python
import timm

model = timm.create_model(
    "{name}",
    pretrained=True,
    pretrained_cfg_overlay=dict(file="{unfused}", num_classes={n}),
    num_classes={n},
)
```
"""


def write_card(out_dir: Path, metadata: dict, test_metrics: dict | None, run_config: dict, backbone) -> Path:
    """The model card (README.md) and timm's config.json of a bundle."""
    write_timm_config(out_dir / CONFIG_NAME, backbone, metadata)
    return write_text(out_dir / CARD_NAME, card_text(metadata, test_metrics, run_config))


# the card on the page (deploy/serve.py)


def card_summary(predictor: Predictor) -> str:
    metrics = predictor.metadata.get("test_metrics") or {}
    lines = [
        f"### {predictor.model_name}",
        f"Classes: {', '.join(predictor.class_names)}.",
        f"Input: {predictor.model_input.describe()}.",
    ]
    if metrics.get("accuracy") is not None:
        low, high = metrics.get("accuracy_ci") or (metrics["accuracy"], metrics["accuracy"])
        lines.append(
            f"Test accuracy {100 * metrics['accuracy']:.2f}% (95% CI {100 * low:.2f}–{100 * high:.2f}%) "
            f"on {metrics['n']} images."
        )
    lines.append(predictor.metadata.get("intended_use", ""))
    return "\n\n".join(lines)


def without_confusion_table(card: str) -> str:
    """The card's text for the page's narrow column: without its confusion-matrix table (the page draws it as a
    figure instead) and without the table of the bundle's files (for those who download it)."""
    card = re.sub(r"## Files\n.*?(?=\n## )", "", card, flags=re.S)
    return re.sub(r"\n*Confusion matrix \(rows: true class, columns: predicted\):\n\n(\|.*\n)+", "\n", card)


def confusion_figure(predictor: Predictor):
    """The test split's confusion matrix as a matplotlib figure, or None when the bundle has none."""
    matrix = (predictor.metadata.get("test_metrics") or {}).get("confusion_matrix")
    if not matrix:
        return None
    from sklearn.metrics import ConfusionMatrixDisplay

    from kvasir_mobileone.io import pyplot

    plt = pyplot()
    names = predictor.class_names
    fig, ax = plt.subplots(figsize=(4.6, 4.2), layout="constrained")
    ConfusionMatrixDisplay(np.asarray(matrix), display_labels=names).plot(
        ax=ax, cmap="Blues", colorbar=False, xticks_rotation=45
    )
    ax.set_title(f"Confusion matrix, test split ({int(np.sum(matrix))} images)", fontsize=10)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    return fig
