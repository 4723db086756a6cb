"""`kvasir features`: pooled backbone embeddings of every image, then classical models (scikit-learn) on them,
tuned on val and reported on the same test split as the networks, in run-like folders that `compare` reads."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import ParameterGrid
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC
from tqdm import tqdm

from kvasir_mobileone.data.datamodule import ImageFolderDataModule
from kvasir_mobileone.data.transforms import normalize
from kvasir_mobileone.evaluation.report import evaluate, write_report
from kvasir_mobileone.evaluation.stats import softmax
from kvasir_mobileone.io import write_json
from kvasir_mobileone.models.backbone import logits_and_features
from kvasir_mobileone.runs import RunFolder

# name -> (estimator factory, hyperparameter grid searched on val). Features are standardised first.
CLASSICAL = {
    "logreg": (lambda **p: LogisticRegression(max_iter=2000, **p), {"C": [0.01, 0.1, 1.0, 10.0]}),
    "linear_svm": (lambda **p: LinearSVC(max_iter=5000, **p), {"C": [0.001, 0.01, 0.1, 1.0]}),
    "random_forest": (
        lambda **p: RandomForestClassifier(n_estimators=300, random_state=0, n_jobs=-1, **p),
        {"max_depth": [None, 16], "min_samples_leaf": [1, 3]},
    ),
    "knn": (lambda **p: KNeighborsClassifier(**p), {"n_neighbors": [1, 5, 15], "weights": ["uniform", "distance"]}),
}


def extract_features(
    trained, manifest: str | None = None, batch_size: int = 64, num_workers: int | None = None
) -> dict:
    """Pooled pre-logits embeddings (timm forward_head(pre_logits=True)) of every image of the run's manifest, at
    the run's evaluation precision (fp32 unless --trainer.eval_precision as-training), stored as float32. Every
    image must be read: an unreadable one stops with the file named (no embedding is invented)."""
    rows, _ = trained.manifest_rows(manifest)
    workers = num_workers if num_workers is not None else trained.data.num_workers
    data = dataclasses.replace(
        trained.data, data_dir=str(trained.data_dir()), batch_size=batch_size, num_workers=workers, loader="workers"
    )  # loader workers: the model runs on the CPU here
    module = trained.module
    datamodule = ImageFolderDataModule(data, rows, trained.model_input)
    datamodule.setup()
    loader = datamodule.loader(None)  # every split, no augmentation, unreadable images are errors
    embeddings = np.full((len(rows), module.backbone.num_features), np.nan, np.float32)
    with trained.evaluating():
        for images, _, index, _ in tqdm(loader, desc="features", unit="batch"):
            x = normalize(images, datamodule.model_input)
            pooled = logits_and_features(module.backbone, x)[1]
            embeddings[index.numpy()] = pooled.float().numpy()
    if np.isnan(embeddings).any():  # cannot happen unless an image was left out; never train on made-up rows
        raise RuntimeError(f"{int(np.isnan(embeddings).any(axis=1).sum())} images got no embedding.")
    return {
        "embeddings": embeddings,
        "paths": np.array([r["path"] for r in rows]),
        "labels": np.array([r["label"] for r in rows]),
        "splits": np.array([r["split"] for r in rows]),
        "class_names": np.array(module.class_names),
        "model": module.model_config.name,
    }


def scores_of(model, x: np.ndarray) -> np.ndarray:
    """Class probabilities, or softmax of decision scores for models without probabilities (linear SVM)."""
    if hasattr(model, "predict_proba"):
        return model.predict_proba(x)
    return softmax(model.decision_function(x))


def fit_classical(features: dict, out_dir: Path, backbone_name: str) -> list[dict]:
    """Each classical model: grid search on val, refit on train, test; writes out_dir/<name>/test/ like a run."""
    class_names = list(features["class_names"])
    y = np.array([class_names.index(c) for c in features["labels"]])
    split = features["splits"]
    x_train, y_train = features["embeddings"][split == "train"], y[split == "train"]
    x_val, y_val = features["embeddings"][split == "val"], y[split == "val"]
    x_test, y_test = features["embeddings"][split == "test"], y[split == "test"]
    summary = []
    for name, (factory, grid) in CLASSICAL.items():
        start = time.perf_counter()
        best_params, best_score = None, -1.0
        for params in ParameterGrid(grid):
            model = make_pipeline(StandardScaler(), factory(**params)).fit(x_train, y_train)
            score = float(np.mean(model.predict(x_val) == y_val))
            if score > best_score:
                best_params, best_score = params, score
        model = make_pipeline(StandardScaler(), factory(**best_params)).fit(x_train, y_train)
        probs = scores_of(model, x_test)
        metrics = evaluate(probs, y_test, class_names)
        label = f"{name} on {backbone_name} features"
        write_report(
            out_dir / name / "test",
            metrics,
            class_names,
            label,
            probs,
            y_test,
            list(features["paths"][split == "test"]),
        )
        write_json(
            RunFolder(out_dir / name).model_info,
            {"classical": name, "best_params": best_params, "val_accuracy": best_score},
        )
        summary.append(
            {
                "model": name,
                "params": best_params,
                "val_accuracy": best_score,
                "test_accuracy": metrics["accuracy"],
                "test_f1_macro": metrics["f1_macro"],
                "seconds": time.perf_counter() - start,
            }
        )
    return summary
