"""`kvasir features`: backbone embeddings of every image, and classical models on them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kvasir_mobileone.evaluation.features import extract_features, fit_classical
from kvasir_mobileone.io import atomic_path, markdown_table, write_json
from kvasir_mobileone.models.loading import open_run
from kvasir_mobileone.runs import CLASSICAL_SUMMARY_NAME, FEATURES_NAME, RunError


def features(
    run: str,
    out: str | None = None,
    classical: bool = True,
    batch_size: int = 64,
    num_workers: int | None = None,
    manifest: str | None = None,
    data_dir: str | None = None,
) -> Path:
    """Embeddings of every image of RUN into OUT/features.npz; with --classical, scikit-learn models on them."""
    trained = open_run(run, data_dir)
    if out is None and trained.run is None:
        raise RunError(f"{trained.ckpt} is a lone checkpoint: pass --out (and --manifest).")
    out_dir = Path(out) if out else trained.run.features_dir
    found = extract_features(trained, manifest, batch_size, num_workers)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / FEATURES_NAME) as tmp, tmp.open("wb") as f:
        np.savez_compressed(f, **found)
    print(f"{len(found['paths'])} embeddings of size {found['embeddings'].shape[1]} -> {out_dir / FEATURES_NAME}")
    if classical:
        summary = fit_classical(found, out_dir, found["model"])
        write_json(out_dir / CLASSICAL_SUMMARY_NAME, summary)
        print(
            markdown_table(
                ["model", "chosen on val", "val acc", "test acc", "test macro-F1"],
                [[s["model"], s["params"], s["val_accuracy"], s["test_accuracy"], s["test_f1_macro"]] for s in summary],
            )
        )
        print(
            f"Compare with the network: kvasir compare {trained.source} "
            + " ".join(str(out_dir / s["model"]) for s in summary)
        )
    return out_dir
