"""`kvasir label-issues CV_DIR`: the images whose given label the out-of-fold predictions of `kvasir cv` doubt."""

from __future__ import annotations

from pathlib import Path

from kvasir_mobileone.data.check import check_folder
from kvasir_mobileone.errors import UserError
from kvasir_mobileone.evaluation.label_issues import join_conflicts, rank_label_issues, write_label_issues
from kvasir_mobileone.extras import require
from kvasir_mobileone.runs import FOLDS_KEY, REPORT_NAME, CvFolder, existing_data_dir


def label_issues(cv_dir: str, data_dir: str | None = None, out: str | None = None) -> list[dict]:
    """Rank the images whose given label the cross-validated model doubts.

    Rank the images whose given label the pooled out-of-fold probabilities of a `kvasir cv` folder doubt
    (cleanlab), joined by the check's near-duplicate label conflicts; writes CV_DIR/label_issues/{label_issues.csv,
    report.md, label_issues.png}. The CSV is a --data.exclude file as it is: `kvasir fit --data.exclude CSV`.
    --data_dir when the cv's data folder has moved."""
    require("cleanlab", "label-issues")
    folder = CvFolder(Path(cv_dir))
    config = folder.read_config()
    if FOLDS_KEY not in config:
        raise UserError(
            f"{cv_dir} is not a `kvasir cv` folder: label-issues needs every image predicted by a model that did "
            "not train on it (out-of-fold). Run `kvasir cv` first, then `kvasir label-issues CV_DIR`."
        )
    predictions = folder.test.predictions
    if not predictions.is_file():
        raise UserError(f"{predictions} not found: the cv in {cv_dir} did not finish. Run it again.")
    found = folder.test.read_predictions()
    issues = rank_label_issues(found.paths, found.targets, found.probs, found.class_names)
    images = existing_data_dir(config["data"]["data_dir"], data_dir, cv_dir)
    data = config["data"]
    checked = check_folder(images, data.get("near_duplicate_bits", 2), cache_dir=data.get("cache_dir"))
    label_of = dict(checked.items)
    conflicts = [  # every member of a near-duplicate group with two labels: which one is wrong is for a person
        (member, f"near-duplicate of {', '.join(m for m in group if m != member)}; labels {labels}")
        for group in checked.duplicate_groups
        if len(labels := sorted({label_of[m] for m in group if m in label_of})) > 1
        for member in group
    ]
    issues = join_conflicts(issues, conflicts)
    leaking = [k for k in folder.fold_ids() if folder.fold(k).leaks.is_file()]
    out_dir = Path(out) if out else folder.label_issues_dir
    csv_path = out_dir / folder.label_issues.name
    write_label_issues(out_dir, csv_path, issues, Path(images), len(found.paths), leaking)
    flagged = sum(1 for r in issues if r["given_label"])
    print(
        f"{flagged} of {len(found.paths)} images have a label the out-of-fold predictions doubt (cleanlab); "
        f"{len(issues) - flagged} near-duplicate label conflicts from the check."
    )
    for r in issues[:10]:
        print(f"  #{r['rank']} {r['path']}: given {r['given_label'] or '?'}, suggested {r['suggested_label'] or '?'}")
    print(f"Report: {out_dir / REPORT_NAME}\nCSV (a --data.exclude file): {csv_path}")
    return issues
