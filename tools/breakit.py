"""Break each behaviour on purpose and watch its test fail: `make breakit` (outside the default suite).

Each entry names a behaviour, the one-line change in src/ that breaks it, and the test that must then fail. For each
entry the script copies src/, tests/ and pyproject.toml into a temporary folder, applies the change there (the
working tree is never touched), runs the named test against the copy and records whether it failed. It prints the
table and exits non-zero when a test missed its mutation or an entry no longer matches the code.

    python tools/breakit.py                 # every entry
    python tools/breakit.py --only leak     # entries whose behaviour or test mentions "leak"
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]


class Mutation(NamedTuple):
    behaviour: str
    file: str  # under src/kvasir_mobileone/
    original: str  # must occur exactly once in the file
    broken: str
    test: str  # pytest node id


HK = "tests/test_hyper_kvasir.py::"
MUTATIONS = [
    # issue 20: HyperKvasir, official splits, leaks
    Mutation(
        "a folder with images and class folders is an error",
        "data/folder.py",
        "        if holder is not None:",
        "        if False:",
        HK + "test_a_folder_with_images_and_class_folders_or_two_classes_of_one_name_is_an_error",
    ),
    Mutation(
        "the class is the leaf folder, not the first level",
        "data/folder.py",
        "        classes[here.name] = here",
        "        classes[here.relative_to(root).parts[0]] = here",
        HK + "test_the_nested_layout_is_read_as_its_leaf_classes",
    ),
    Mutation(
        "the official split's fold K is the test split",
        "data/official.py",
        "        if item_fold == fold:",
        "        if item_fold != fold:",
        HK + "test_an_official_split_maps_names_and_reports_rows_without_files_and_files_without_rows",
    ),
    Mutation(
        "labels come from the folders, not the CSV",
        "data/official.py",
        "        matched.append((rel, label))",
        "        matched.append((rel, csv_class))",
        HK + "test_an_official_split_maps_names_and_reports_rows_without_files_and_files_without_rows",
    ),
    Mutation(
        "files the split does not list are named",
        "data/official.py",
        "            report.files_without_row.append(rel)",
        "            pass",
        HK + "test_an_official_split_maps_names_and_reports_rows_without_files_and_files_without_rows",
    ),
    Mutation(
        "the leak-free test set leaves out near-copies of train/val images",
        "data/split.py",
        'if r["split"] == "test" and r.get(GROUP, "") not in seen_in_training}',
        'if r["split"] == "test"}',
        HK + "test_the_leak_free_subset_is_the_test_images_without_a_planted_near_duplicate",
    ),
    Mutation(
        "the test report's leak-free figures cover the leak-free images only",
        "evaluation/testing.py",
        "    keep = np.array([p in clean for p in paths], dtype=bool)",
        "    keep = np.array([p in clean or True for p in paths], dtype=bool)",
        HK + "test_fit_with_the_shipped_official_split_runs_end_to_end_and_reports_both_test_figures",
    ),
    Mutation(
        "--data.on_leak refuse stops a leaking split",
        "commands/fit.py",
        '    if on_leak == "refuse":',
        '    if on_leak == "never":',
        HK + "test_fit_with_the_shipped_official_split_runs_end_to_end_and_reports_both_test_figures",
    ),
    Mutation(
        "a manifest's unreadable val/test image stops fit before training",
        "data/check.py",
        "        if held_out:",
        "        if False:",
        HK + "test_a_manifest_is_checked_like_a_folder",
    ),
    Mutation(
        "cv runs the official folds",
        "commands/cv.py",
        "    if data.official_split:\n        manifests = []",
        "    if False:\n        manifests = []",
        HK + "test_cv_runs_the_official_folds",
    ),
    Mutation(
        "the model card states the dataset's licence",
        "deploy/card.py",
        '    if dataset.licence == "other":',
        '    if dataset.licence != "other":',
        HK + "test_the_model_card_states_the_dataset_and_its_licence",
    ),
    Mutation(
        "HyperKvasir extracts to its own folder",
        "commands/download.py",
        "    extract(zip_path, dest_dir, spec.folder)",
        "    extract(zip_path, dest_dir)",
        "tests/test_download.py::test_hyper_kvasir_downloads_into_its_nested_layout_and_says_what_to_do_offline",
    ),
    Mutation(
        "the check decodes and hashes each unchanged file once",
        "data/check.py",
        'known.get(rel, {}).get("stamp") != stamps[rel]]',
        "True]",
        "tests/test_reliability.py::test_the_check_reads_unchanged_files_once_and_changed_files_again",
    ),
    Mutation(
        "predict breaks a tie as argmax (evaluation) does",
        "deploy/predict.py",
        'np.argsort(-probs, kind="stable")',
        "np.argsort(-probs)",
        "tests/test_int8.py::test_predict_runs_the_int8_model_without_torch_unless_fp32_is_asked",
    ),
    Mutation(
        "each cv fold records its own official fold",
        "commands/cv.py",
        "manifest=str(manifest), fold=k)",
        "manifest=str(manifest))",
        HK + "test_cv_runs_the_official_folds",
    ),
    Mutation(
        "fewer than 2 leak-free test images give no figures instead of a crash",
        "evaluation/testing.py",
        "    if keep.sum() < 2:",
        "    if keep.sum() < 1:",
        HK + "test_a_single_leak_free_test_image_is_reported_without_figures",
    ),
    Mutation(
        "the check's cache goes to --data.cache_dir when given",
        "data/check.py",
        "(Path(cache_dir) if cache_dir else root / CACHE_DIR_NAME)",
        "(root / CACHE_DIR_NAME)",
        "tests/test_reliability.py::test_the_check_keeps_its_cache_in_the_cache_dir_when_one_is_given",
    ),
    # issue 19: one owner per contract, thin commands
    Mutation(
        "nothing below commands/ prints",
        "deploy/explain.py",
        "    return written",
        "    print(len(written))\n    return written",
        "tests/test_structure.py::test_every_user_command_is_a_function_in_commands_and_nothing_below_prints",
    ),
    Mutation(
        "run-folder file names are spelled in runs.py alone",
        "commands/demo.py",
        "{run.test.report}",
        "{run.test_dir / 'report.md'}",
        "tests/test_structure.py::test_run_files_are_spelled_in_runs_py_alone",
    ),
    Mutation(
        "the README's run-folder table is runs.LAYOUT",
        "runs.py",
        '"`checkpoints/last.ckpt`": "end of the last epoch, for `--resume`",',
        '"`checkpoints/last.ckpt`": "end of the last epoch",',
        "tests/test_structure.py::test_the_readme_run_folder_table_is_runs_layout",
    ),
    Mutation(
        "the formatter decides (no fmt: skip)",
        "io.py",
        'IMAGE_EXTENSIONS = (".jpg",',
        'IMAGE_EXTENSIONS = (".jpg",  # fmt' + ": skip\n",
        "tests/test_structure.py::test_the_formatter_decides_the_layout",
    ),
    Mutation(
        "the model card's snippet masks as predict does",
        "deploy/card.py",
        'for x0, y0, x1, y1 in spec["mask"]:',
        "for x0, y0, x1, y1 in []:",
        "tests/test_deploy.py::test_the_model_cards_snippet_preprocesses_exactly_as_predict_mask_included",
    ),
    Mutation(
        "the checkpoint's stored input is read back, not recomputed",
        "models/classifier.py",
        'Normalization.from_dict(hparams["normalization"])',
        'input_spec(offline["name"], hparams.get("image_size"))',
        "tests/test_model.py::test_a_checkpoint_gives_back_the_input_it_was_trained_with",
    ),
    Mutation(
        "--data still works for check, eda and prepare, with a note",
        "cli.py",
        "    if not any(a in OLD_DATA_FLAG for a in args[:1])",
        "    if True or not any(a in OLD_DATA_FLAG for a in args[:1])",
        "tests/test_cli.py::test_the_data_folder_is_data_dir_everywhere_and_the_old_flag_still_works_with_a_note",
    ),
]


def run(mutation: Mutation, work: Path) -> tuple[str, float]:
    """'caught', 'MISSED' or 'STALE' (the original text is not in the file exactly once), and seconds."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    for part in ("src", "tests", "pyproject.toml"):
        source = ROOT / part
        (shutil.copytree if source.is_dir() else shutil.copy)(source, work / part)
    target = work / "src" / "kvasir_mobileone" / mutation.file
    text = target.read_text()
    if text.count(mutation.original) != 1:
        return "STALE", 0.0
    target.write_text(text.replace(mutation.original, mutation.broken))
    env = os.environ | {"PYTHONPATH": str(work / "src")}
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", mutation.test],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    if result.returncode == 5 or "no tests ran" in result.stdout:
        return "STALE", seconds  # the test is gone or renamed
    return ("caught" if result.returncode != 0 else "MISSED"), seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="run the entries whose behaviour or test contains this text")
    args = parser.parse_args()
    chosen = [m for m in MUTATIONS if not args.only or args.only in m.behaviour or args.only in m.test]
    rows = []
    with tempfile.TemporaryDirectory(prefix="breakit-") as tmp:
        for k, mutation in enumerate(chosen, 1):
            verdict, seconds = run(mutation, Path(tmp) / "copy")
            print(f"[{k}/{len(chosen)}] {verdict}: {mutation.behaviour} ({seconds:.0f} s)", file=sys.stderr)
            rows.append((mutation, verdict))
    print("| behaviour | what was broken (src/kvasir_mobileone/) | test that must fail | result |")
    print("|---|---|---|---|")
    for m, verdict in rows:
        change = f"`{m.file}`: `{m.original.strip().splitlines()[0]}` → `{m.broken.strip().splitlines()[0]}`"
        print(f"| {m.behaviour} | {change} | `{m.test.split('::')[-1]}` | {verdict} |")
    bad = [m for m, verdict in rows if verdict != "caught"]
    print(f"\n{len(rows) - len(bad)} of {len(rows)} mutations caught.")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
