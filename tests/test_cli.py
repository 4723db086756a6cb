"""End to end through the `kvasir` command, in-process: fit -> test on a tiny synthetic set."""

import inspect
import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from fitflags import fit_flags, fit_run
from kvasir_mobileone.cli import COMMANDS, _command, main, quote_regions
from kvasir_mobileone.deploy.predict import probabilities
from kvasir_mobileone.deploy.runtime import load
from kvasir_mobileone.images import ModelInput
from kvasir_mobileone.io import read_csv

ROOT = Path(__file__).resolve().parents[1]


def test_fit_writes_a_complete_run_folder(trained_run, tiny_data):
    for name in (
        "config.yaml",
        "split_manifest.csv",
        "split_counts.json",
        "checkpoints/best.ckpt",
        "checkpoints/last.ckpt",
    ):
        assert (trained_run / name).is_file(), name
    config = yaml.safe_load((trained_run / "config.yaml").read_text())
    assert config["data"]["data_dir"] == str(tiny_data.resolve()) and config["model"]["name"] == "mobileone_s0"
    assert json.loads((trained_run / "split_counts.json").read_text())["test"] == {
        c: 4 for c in sorted(p.name for p in tiny_data.iterdir() if not p.name.startswith("."))
    }


def test_wandb_offline_run_is_written(trained_run):
    runs = list((trained_run / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("run-*.wandb")), "no offline W&B run file"


def test_test_command_reports_above_chance(trained_run):
    """The report `kvasir test RUN --num_workers 0` wrote (trained_run's build runs it, once)."""
    out = trained_run / "test"
    metrics = json.loads((out / "metrics.json").read_text())
    # 4 classes: above chance (4 of 16) by the report's own 95% interval, not by a point value that one image or the
    # CPU kind moves (11 of 16 here; the interval's low end needs 8)
    assert metrics["n"] == 16 and metrics["accuracy_ci"][0] > 0.25 and metrics["eval_precision"] == "32-true"
    report = (out / "report.md").read_text()
    assert "| Accuracy | Top-3 | Top-5 | F1 | macro-F1 |" in report
    for png in ("confusion_matrix.png", "confusion_matrix_normalized.png"):
        with Image.open(out / png) as image:
            assert image.format == "PNG" and image.size[0] > 300
    header = "class,support,precision,recall,recall_ci_low,recall_ci_high,f1"
    assert (out / "per_class.csv").read_text().startswith(header)
    assert len((out / "predictions.csv").read_text().splitlines()) == 17


def test_test_refuses_a_manifest_with_other_classes(trained_run, tmp_path):
    manifest = (trained_run / "split_manifest.csv").read_text().replace(",dyed-lifted-polyps,", ",tumours,")
    (tmp_path / "m.csv").write_text(manifest)
    with pytest.raises(ValueError, match="predicts classes"):
        main(["test", str(trained_run), "--manifest", str(tmp_path / "m.csv"), "--num_workers", "0"])


def test_eda_writes_charts_and_counts(tiny_data, trained_run, tmp_path):
    main(
        [
            "eda",
            "--data",
            str(tiny_data),
            "--out",
            str(tmp_path),
            "--manifest",
            str(trained_run / "split_manifest.csv"),
        ]
    )
    summary = json.loads((tmp_path / "class_counts.json").read_text())
    assert summary["total"] == 160 and set(summary["splits"]) == {"train", "val", "test"}
    for png in ("class_counts.png", "samples.png", "resolutions.png"):
        with Image.open(tmp_path / png) as image:
            assert image.format == "PNG"
    assert "| class | images | train | val | test |" in (tmp_path / "class_counts.md").read_text()


def test_test_reproduces_the_fit_report_exactly_whatever_the_training_precision(tiny_data, tmp_path):
    """Trained with bf16 autocast, tested at the end of fit and again by `kvasir test`: both at the run's fp32
    evaluation precision, so the predictions are equal to the last digit. With --trainer.eval_precision as-training
    every evaluating command (predict on the run, features, export's check) runs at bf16."""
    # what is claimed is the precision of the evaluation, not of MobileOne: resnet10t, 2 epochs
    bf16 = ["--trainer.precision", "bf16-mixed"]
    fit_run(tiny_data, tmp_path, "bf16", flags=fit_flags(batch_size=8, epochs=2) + bf16)
    run = tmp_path / "bf16"
    in_fit = json.loads((run / "test" / "metrics.json").read_text())
    again = main(["test", str(run), "--out", str(tmp_path / "again")])
    assert in_fit["eval_precision"] == again["eval_precision"] == "32-true"
    assert (tmp_path / "again" / "predictions.csv").read_text() == (run / "test" / "predictions.csv").read_text()
    assert again["loss"] == in_fit["loss"] and again["confusion_matrix"] == in_fit["confusion_matrix"]
    # the precision matters: evaluated in bf16 the same checkpoint gives other probabilities
    main(["test", str(run), "--out", str(tmp_path / "bf16_eval"), "--precision", "bf16-mixed"])
    bf16_eval = (tmp_path / "bf16_eval" / "predictions.csv").read_text()
    assert bf16_eval != (run / "test" / "predictions.csv").read_text()

    # --trainer.eval_precision as-training (set in the run's config): predict, features and export's check follow it
    config = yaml.safe_load((run / "config.yaml").read_text())
    (run / "config.yaml").write_text(
        yaml.safe_dump(config | {"trainer": config["trainer"] | {"eval_precision": "as-training"}})
    )
    tested = read_csv(tmp_path / "bf16_eval" / "predictions.csv")
    images = [str(tiny_data / r["path"]) for r in tested[:8]]
    from_run = main(["predict", *images, "--model", str(run), "--top_k", "4"])
    bf16_probs = np.array(
        [sorted((float(v) for k, v in r.items() if k.startswith("p_")), reverse=True) for r in tested]
    )
    run_probs = np.array([[a[f"p{k}"] for k in range(1, 5)] for a in from_run])
    assert np.allclose(run_probs, bf16_probs[:8], atol=2e-4)  # the probabilities of the test at bf16
    main(["export", str(run), "--out", str(tmp_path / "bundle")])
    meta = json.loads((tmp_path / "bundle" / "metadata.json").read_text())
    assert meta["parity_at_eval_precision"]["precision"] == "bf16-mixed"
    # bf16 and fp32 differ, so the match above is not by chance. Shown on the logits: a saturated softmax gives equal
    # probabilities to 1e-6 whatever the precision (seen on AMD EPYC). The run's logits are bf16 numbers (the head ran
    # in bf16) and the fp32 bundle's are not; both hold on any CPU.
    batch = np.stack([ModelInput.from_dict(meta["input"]).read(path)[0] for path in images])
    run_predictor = load(str(run))
    bf16_logits = run_predictor.logits(batch)
    fp32_logits = load(str(tmp_path / "bundle"), "fp32").logits(batch)
    as_bf16 = torch.from_numpy(bf16_logits).to(torch.bfloat16).float().numpy()
    assert run_predictor.precision == "bf16-mixed" and np.array_equal(as_bf16, bf16_logits)
    assert not np.array_equal(torch.from_numpy(fp32_logits).to(torch.bfloat16).float().numpy(), fp32_logits)
    assert np.allclose(probabilities(run_predictor, batch).max(1), run_probs[:, 0], atol=1e-5)  # predict's answer
    bf16_features = np.load(main(["features", str(run), "--classical", "false"]) / "features.npz")["embeddings"]
    (run / "config.yaml").write_text(yaml.safe_dump(config))  # back to 32-true
    fp32_features = np.load(main(["features", str(run), "--classical", "false"]) / "features.npz")["embeddings"]
    assert np.abs(bf16_features - fp32_features).max() > 1e-3


def test_the_data_folder_is_data_dir_everywhere_and_the_old_flag_still_works_with_a_note(tiny_data, capsys):
    new = main(["check", "--data_dir", str(tiny_data)])
    assert "note:" not in capsys.readouterr().err
    old = main(["check", "--data", str(tiny_data)])
    assert "note: --data is now --data_dir" in capsys.readouterr().err
    assert old.items == new.items
    for command in ("check", "eda", "prepare", "test", "features", "audit", "export"):
        parameters = inspect.signature(_command(command)).parameters
        assert "data" not in parameters, command
    for command in ("check", "eda", "prepare", "test", "features", "audit", "export", "label-issues"):
        assert "data_dir" in inspect.signature(_command(command)).parameters, command


def test_renamed_flags_keep_working_for_one_release_with_a_note(capsys):
    from kvasir_mobileone.cli import renamed_flags

    assert renamed_flags(["prepare", "--size", "64", "--data=d"]) == ["prepare", "--image_size", "64", "--data_dir=d"]
    assert renamed_flags(["benchmark", "--images=8", "--workers", "2"]) == [
        "benchmark",
        "--num_images=8",
        "--num_workers",
        "2",
    ]
    err = capsys.readouterr().err
    assert "note: --size is now --image_size" in err and "note: --workers is now --num_workers" in err
    assert renamed_flags(["audit", "r", "--regions", "[a]"]) == ["audit", "r", "--mask_regions", "[a]"]
    assert renamed_flags(["fit", "--data.image_size", "64"]) == ["fit", "--data.image_size", "64"]  # fit's own flags


def readme_command_lines() -> list[str]:
    """Every `kvasir ...` command line of the README and its guides (docs/): in code blocks (continuations joined,
    `&&` chains split, comments dropped) and in inline code that is a whole command (not a synopsis with [optional]
    parts or ...)."""
    text = "\n".join(p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])
    lines, fenced, block = [], False, []
    for line in text.splitlines():
        if line.startswith("```"):
            if fenced:
                joined = "\n".join(block).replace("\\\n", " ")
                lines += [c.strip() for raw in joined.splitlines() for c in raw.split("&&")]
            fenced, block = not fenced, []
        elif fenced:
            block.append(line)
        elif not line.startswith("|"):  # the command table's rows are synopses (RUN_DIR [--flag ...])
            lines += [s for s in re.findall(r"`(kvasir [^`]+)`", line) if not re.search(r" --(?!help)\w+$", s)]
    commands = []
    for line in lines:
        words = shlex.split(line, comments=True)
        if words[:1] == ["kvasir"] and not any(w.startswith("[") and "--" in w or w in ("...", "\\|") for w in words):
            commands.append(words)
    return commands


def test_every_command_line_in_the_readme_parses(monkeypatch, capsys):
    """Each README command line, given to the parser with --print_config (parse, print, exit 0; nothing runs)."""
    monkeypatch.chdir(ROOT)  # configs/... paths are relative to the repository
    commands = readme_command_lines()
    assert len(commands) >= 40, commands  # the README's blocks and inline commands were found
    failed = []
    for command in commands:
        words = command[1:]
        if words[0] not in COMMANDS:
            continue  # `kvasir X`, `kvasir --debug`: prose about the command itself
        with pytest.raises(SystemExit) as stop:
            main([*words, "--print_config"] if "--help" not in words else words)
        if stop.value.code not in (0, None):
            failed.append(f"{shlex.join(command)}: {capsys.readouterr().err.strip().splitlines()[-3:]}")
    assert not failed, "\n".join(failed)


def test_every_commands_help_summary_is_a_whole_sentence(capsys):
    """`kvasir --help` shows the first line of each command's docstring: a sentence that ends there, never one cut
    mid-way ("... into", "... with")."""
    with pytest.raises(SystemExit):
        main(["--help"])
    listing = capsys.readouterr().out.split("Available subcommands:")[1]
    summaries = re.split(r"\n    (?=[a-z-]+ )", listing)[1:]
    assert [s.split()[0] for s in summaries] == list(COMMANDS)
    cut = [s.split()[0] for s in summaries if not " ".join(s.split()).endswith(".")]
    assert not cut, f"summaries cut mid-sentence: {cut}"


def test_region_boxes_parse_on_the_command_line_as_the_readme_writes_them():
    assert quote_regions(["audit", "r", "--regions", "[bottom-left-box, logo:0.8,0,1,0.1]"])[-1] == json.dumps(
        ["bottom-left-box", "logo:0.8,0,1,0.1"]
    )
    assert quote_regions(["fit", "--data.mask_regions=[a:0.1,0,0.2,0.3, top-left-text]"]) == [
        "fit",
        "--data.mask_regions=" + json.dumps(["a:0.1,0,0.2,0.3", "top-left-text"]),
    ]
    assert quote_regions(["fit", "--data.mask_regions", "[bottom-left-box]"])[-1] == "[bottom-left-box]"


def test_fast_dev_run_is_a_smoke_run_without_a_test_report(tiny_data, tmp_path, capsys):
    """Lightning's fast_dev_run saves no checkpoint and runs one test batch: fit says so instead of crashing (or of
    writing a report whose n is one batch)."""
    run = main(
        [
            "fit",
            "--data.data_dir",
            str(tiny_data),
            "--data.image_size",
            "32",
            "--data.num_workers",
            "0",
            "--model.name",
            "mobileone_s0",
            "--model.pretrained",
            "false",
            "--trainer.fast_dev_run",
            "true",
            "--trainer.logger",
            "none",
            "--trainer.runs_dir",
            str(tmp_path),
        ]
    )
    assert "No test report: --trainer.fast_dev_run" in capsys.readouterr().out
    assert (run / "config.yaml").is_file() and not (run / "test" / "metrics.json").exists()


@pytest.mark.slow
@pytest.mark.timeout(1200)  # two whole demos
def test_demo_makes_the_data_it_is_asked_for_when_a_data_folder_exists(tmp_path):
    quick = ["--out", str(tmp_path), "--image_size", "32", "--max_epochs", "1", "--logger", "none"]
    for per_class in (10, 11):
        run = main(["demo", *quick, "--images_per_class", str(per_class)])
        counts = json.loads((run / "split_counts.json").read_text())
        assert sum(sum(counts[s].values()) for s in ("train", "val", "test")) == 8 * per_class


def test_the_tools_own_warnings_read_warning_colon(tmp_path):
    """A warning of the package prints as `warning: ...`, not as `.../check.py:283: UserWarning: ...`."""
    import subprocess
    import sys

    from kvasir_mobileone.data.synth import synth

    root = synth(str(tmp_path / "d"), images_per_class=3, seed=0, scale=0.1, classes=("polyps", "esophagitis"))
    (root / ".kvasir_cache").write_text("a file where the check's cache folder would go")
    done = subprocess.run(
        [sys.executable, "-m", "kvasir_mobileone.cli", "check", "--data_dir", str(root), "--out", str(tmp_path / "c")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "warning: Could not keep the check's results in" in done.stderr
    assert "UserWarning" not in done.stderr and "check.py:" not in done.stderr
