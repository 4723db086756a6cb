"""Images whose given label the model doubts: cleanlab's confident learning on the pooled out-of-fold probabilities of
`kvasir cv` (every image predicted by a model that never trained on it), joined by the check's near-duplicate label
conflicts (two near-identical frames, two labels)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kvasir_mobileone.extras import require
from kvasir_mobileone.images import decode_resized
from kvasir_mobileone.io import markdown_table, pyplot, save_figure, write_csv, write_text
from kvasir_mobileone.runs import REPORT_NAME

plt = pyplot()
THUMBNAILS = 24  # images drawn in the report's figure, most doubtful first
COLUMNS = ["rank", "path", "given_label", "suggested_label", "label_quality", "flagged_by", "note"]


def rank_label_issues(paths: list[str], labels: np.ndarray, probs: np.ndarray, names: list[str]) -> list[dict]:
    """cleanlab's label issues (find_label_issues: confident learning, prune_by_noise_rate), most doubtful first by
    the self-confidence score (the out-of-fold probability of the given label)."""
    find_label_issues = require("cleanlab.filter", "label-issues").find_label_issues
    get_label_quality_scores = require("cleanlab.rank", "label-issues").get_label_quality_scores

    quality = get_label_quality_scores(labels, probs, method="self_confidence")
    flagged = find_label_issues(labels, probs, return_indices_ranked_by="self_confidence")
    return [
        {
            "path": paths[i],
            "given_label": names[labels[i]],
            "suggested_label": names[int(np.argmax(probs[i]))],
            "label_quality": float(quality[i]),
            "flagged_by": "cleanlab (out-of-fold probabilities)",
            "note": "",
        }
        for i in flagged
    ]


def join_conflicts(issues: list[dict], conflicts: list[tuple[str, str]]) -> list[dict]:
    """Add the check's near-duplicate label conflicts ((path, message)); an image already flagged gets the note."""
    by_path = {row["path"]: row for row in issues}
    for path, message in conflicts:
        if path in by_path:
            by_path[path]["note"] = f"also a near-duplicate label conflict: {message}"
            continue
        row = {
            "path": path,
            "given_label": "",
            "suggested_label": "",
            "label_quality": float("nan"),
            "flagged_by": "kvasir check (near-duplicate label conflict)",
            "note": message,
        }
        issues.append(row)
        by_path[path] = row
    for rank, row in enumerate(issues, 1):
        row["rank"] = rank
    return issues


def write_label_issues(
    out_dir: Path, csv_path: Path, issues: list[dict], data_dir: Path, n_images: int, leaking_folds: list[int]
) -> Path:
    """label_issues.csv (a --data.exclude file as it is), a thumbnail figure and report.md."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(csv_path, COLUMNS, [[row[c] for c in COLUMNS] for row in issues])
    drawn = [row for row in issues if row["given_label"]][:THUMBNAILS]
    figure = plot_thumbnails(drawn, data_dir, csv_path.with_suffix(".png")) if drawn else None
    flagged = sum(1 for row in issues if row["given_label"])
    table = markdown_table(
        ["rank", "image", "given", "suggested", "label quality", "flagged by"],
        [
            [
                r["rank"],
                r["path"],
                r["given_label"] or "—",
                r["suggested_label"] or "—",
                f"{r['label_quality']:.3f}" if r["given_label"] else "—",
                r["flagged_by"] + (f" ({r['note']})" if r["note"] else ""),
            ]
            for r in issues[:100]
        ],
    )
    leak_note = (
        f"**Folds {', '.join(map(str, leaking_folds))} leak**: near-duplicates of some test images were in that "
        "fold's training split (each fold's split_leaks.csv). A memorised copy agrees with its own wrong label, so "
        "leaking folds hide label errors: this list can miss some. Use a split that keeps near-duplicates together "
        "(`kvasir cv` does, unless an official split says otherwise)."
        if leaking_folds
        else "No fold leaked near-duplicates into training. (Leaking folds hide label errors: a memorised copy "
        "agrees with its own wrong label.)"
    )
    report = (
        f"# Label issues\n\n{flagged} of {n_images} images have a given label that the out-of-fold predictions "
        "doubt (cleanlab's confident learning: find_label_issues, ranked by self-confidence, the out-of-fold "
        f"probability of the given label), and {len(issues) - flagged} more come from the check's near-duplicate "
        "label conflicts. Look at them before training again; `kvasir fit --data.exclude "
        f"{csv_path.name}` leaves the listed images out of every split.\n\n{leak_note}\n\n"
        + (f"![most doubtful first]({figure.name})\n\n" if figure else "")
        + table
        + ("\n(first 100 rows; every row is in the CSV)\n" if len(issues) > 100 else "")
    )
    return write_text(out_dir / REPORT_NAME, report)


def plot_thumbnails(rows: list[dict], data_dir: Path, path: Path) -> Path:
    columns = 6
    lines = (len(rows) + columns - 1) // columns
    fig, axes = plt.subplots(lines, columns, figsize=(2.4 * columns, 2.7 * lines), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, row in zip(axes.ravel(), rows, strict=False):
        ax.imshow(decode_resized(data_dir / row["path"], 128))
        ax.set_title(
            f"#{row['rank']} given {row['given_label']}\nsuggested {row['suggested_label']} "
            f"({row['label_quality']:.2f})",
            fontsize=7,
        )
    fig.suptitle("Images whose given label the out-of-fold predictions doubt (label quality: p of the given label)")
    return save_figure(fig, path)
