"""How much the frame tells: the per-class frame and overlay maps (data/field_of_view.py) as a figure, and how well
the maps alone predict the class, with an interval against the majority rate. For `kvasir eda`, `check`, `audit`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from kvasir_mobileone.data.frame import FrameMaps, frame_maps
from kvasir_mobileone.evaluation.stats import wilson_interval
from kvasir_mobileone.io import pyplot, save_figure, write_json
from kvasir_mobileone.marks import frame_pixels
from kvasir_mobileone.runs import FRAME_MAPS_JSON, FRAME_MAPS_PNG

plt = pyplot()
GRID = 16  # the maps are pooled to GRID x GRID cells before a linear model reads them
FOLDS = 5

FRAME_FINDINGS = {
    "differ": "the frame's outline alone tells the classes apart better than the majority rate: a model can "
    "learn the source instead of the tissue (`--data.field_of_view common` gives every frame the same outline)",
    "no evidence": "the frame's outline alone predicts the class no better than the majority rate, within the interval",
    "too few": "too few images per class to tell",
}


def pooled(masks: np.ndarray) -> np.ndarray:
    """N x H x W bool -> N x GRID² shares (H divisible or not: the last cells take the remainder)."""
    n, size = len(masks), masks.shape[1]
    edges = np.linspace(0, size, GRID + 1).round().astype(int)
    sums = np.add.reduceat(np.add.reduceat(masks.astype(np.float64), edges[:-1], axis=1), edges[:-1], axis=2)
    sides = np.diff(edges)
    return (sums / np.outer(sides, sides)).reshape(n, -1)


def frame_features(images: np.ndarray) -> np.ndarray:
    """Per image: where it is frame, pooled (a linear model's input). Overlay colours are left out: white spots
    and highlights of the tissue have them too, and would let the tissue in."""
    return pooled(np.stack([frame_pixels(p) for p in images]))


def map_predictability(
    images: np.ndarray, labels: np.ndarray, train: np.ndarray | None = None, test: np.ndarray | None = None
) -> dict:
    """Accuracy of a logistic regression that sees only where each image is frame: trained on `train` and scored
    on `test` (boolean masks over the images) when given, else stratified 5-fold cross-validated predictions of
    every image. {accuracy, accuracy_ci (Wilson), chance (majority rate of the scored images), n, finding}."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    features = frame_features(images)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=3000))
    if train is not None:
        if len(np.unique(labels[train])) < 2 or not test.any():
            return {"finding": "too few", "n": int(test.sum())}
        predicted, scored = model.fit(features[train], labels[train]).predict(features[test]), labels[test]
    else:
        smallest = np.bincount(labels)[np.bincount(labels) > 0].min()
        if smallest < 2 or len(np.unique(labels)) < 2:
            return {"finding": "too few", "n": int(len(labels))}
        folds = StratifiedKFold(min(FOLDS, int(smallest)), shuffle=True, random_state=0)
        predicted, scored = cross_val_predict(model, features, labels, cv=folds), labels
    correct, n = int(np.sum(predicted == scored)), len(scored)
    low, high = wilson_interval(correct, n)
    chance = float(np.bincount(scored).max() / n)
    return {
        "accuracy": correct / n,
        "accuracy_ci": [low, high],
        "chance": chance,
        "n": n,
        "finding": "differ" if low > chance else "no evidence",
        "method": "train -> test split" if train is not None else f"{folds.get_n_splits()}-fold cross-validation",
    }


def describe_predictability(result: dict) -> str:
    if result["finding"] == "too few":
        return f"Frame maps alone: {FRAME_FINDINGS['too few']} ({result['n']} images)."
    low, high = result["accuracy_ci"]
    return (
        f"The frame alone ({result['method']}, {result['n']} images): {100 * result['accuracy']:.1f}% "
        f"[{100 * low:.1f}, {100 * high:.1f}] against {100 * result['chance']:.1f}% for the majority class: "
        f"{FRAME_FINDINGS[result['finding']]}."
    )


def plot_frame_maps(maps: FrameMaps, path: str | Path, visible: np.ndarray | None = None) -> Path:
    """Per class: the share of frames in which each pixel is frame (top) and overlay (bottom); last column: the
    largest difference between classes, with the common field of view outlined when given."""
    present = [k for k, n in enumerate(maps.counts) if n]
    cols = len(present) + 1
    fig, axes = plt.subplots(2, cols, figsize=(2.1 * cols + 1.2, 4.6), squeeze=False, layout="constrained")
    for col, k in enumerate(present):
        for row, (values, what) in enumerate(((maps.frame[k], "frame"), (maps.overlay[k], "overlay"))):
            ax = axes[row, col]
            image = ax.imshow(values, vmin=0, vmax=1, cmap="magma")
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 0:
                ax.set_ylabel(f"{what} share")
        axes[0, col].set_title(f"{maps.class_names[k]}\n(n={maps.counts[k]})", fontsize=7)
    diff = axes[0, -1].imshow(maps.difference(), vmin=0, vmax=1, cmap="viridis")
    axes[0, -1].set_title("largest difference\nbetween classes", fontsize=7)
    if visible is not None:  # the view is at the network's input size, the maps at the census size
        size = maps.frame.shape[1]
        at_maps = np.asarray(Image.fromarray(visible).resize((size, size), Image.NEAREST))
        axes[0, -1].contour(at_maps, levels=[0.5], colors="white", linewidths=1)
    if visible is not None:
        axes[1, -1].imshow(visible, cmap="gray", vmin=0, vmax=1)
        axes[1, -1].set_title("common field of view\n(white: seen)", fontsize=7)
    else:
        axes[1, -1].axis("off")
    for ax in axes[:, -1]:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(image, ax=axes[:, :-1], shrink=0.8, label="share of the class's frames")
    fig.colorbar(diff, ax=axes[0, -1], shrink=0.8, label="difference")
    fig.suptitle("Where each class's frames are frame (near-black, joined to the border) and overlay")
    return save_figure(fig, path)


def frame_report(thumbs: np.ndarray, labels: np.ndarray, class_names: list[str], out_dir: str | Path | None) -> dict:
    """The frame maps of a folder's images (uint8 NHWC thumbnails): how well they alone predict the class
    (cross-validated, with an interval) and, with `out_dir`, frame_maps.png and frame_maps.json there."""
    maps = frame_maps(thumbs, labels, class_names)
    result = map_predictability(thumbs, labels) | {
        "frame_area": {c: float(maps.frame[k].mean()) for k, c in enumerate(class_names) if maps.counts[k]},
        "largest_difference": float(maps.difference().max()),
    }
    result["line"] = describe_predictability(result)
    if out_dir is not None:
        plot_frame_maps(maps, Path(out_dir) / FRAME_MAPS_PNG)
        write_json(Path(out_dir) / FRAME_MAPS_JSON, result)
    return result
