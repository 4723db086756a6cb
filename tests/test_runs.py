"""The run folder is a contract: any working directory, moved or copied runs, lone checkpoints, Trainer arguments
passed through, and a package whose imports point one way."""

import ast
import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from fitflags import fit_flags
from kvasir_mobileone.cli import main
from kvasir_mobileone.runs import RunError

TINY_FIT = fit_flags(batch_size=8)  # resnet10t: plumbing, not learning
PACKAGE = Path(__file__).parents[1] / "src" / "kvasir_mobileone"


@pytest.fixture(scope="module")
def relative_run(tiny_data, tmp_path_factory):
    """A run made with relative paths from one working directory (as `kvasir demo` does)."""
    home = tmp_path_factory.mktemp("home")
    shutil.copytree(tiny_data, home / "data")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(home)
        main(
            [
                "fit",
                "--data.data_dir",
                "data",
                *TINY_FIT,
                "--trainer.max_epochs",
                "2",
                "--trainer.runs_dir",
                "runs",
                "--trainer.run_name",
                "r",
            ]
        )
    return home / "runs" / "r"


def test_every_command_works_from_another_working_directory(relative_run, tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    in_place = json.loads((relative_run / "test" / "metrics.json").read_text())
    assert main(["test", str(relative_run), "--out", "t"])["accuracy"] == in_place["accuracy"]
    main(["export", str(relative_run), "--out", "bundle"])
    assert json.loads(Path("bundle/metadata.json").read_text())["parity"]["images"] == in_place["n"]
    main(["features", str(relative_run), "--out", "f", "--classical", "false"])
    assert Path("f/features.npz").is_file()
    results = main(["predict", str(relative_run.parents[1] / "data"), "--model", "bundle"])
    assert len(results) == 160 and not any(r["error"] for r in results)
    main(["compare", str(relative_run), "t", "--out", "cmp"])
    assert json.loads(Path("cmp/comparison.json").read_text())["test_images"] == in_place["n"]


def test_a_moved_run_and_a_lone_checkpoint_give_the_same_metrics(relative_run, tmp_path):
    in_place = main(["test", str(relative_run), "--out", str(tmp_path / "in_place")])
    moved = tmp_path / "moved" / "run"
    shutil.copytree(relative_run, moved)
    assert main(["test", str(moved), "--out", str(tmp_path / "m")])["confusion_matrix"] == in_place["confusion_matrix"]
    lone = tmp_path / "lone.ckpt"
    shutil.copy(relative_run / "checkpoints" / "best.ckpt", lone)
    alone = main(
        ["test", str(lone), "--manifest", str(relative_run / "split_manifest.csv"), "--out", str(tmp_path / "l")]
    )
    assert alone["loss"] == in_place["loss"] and alone["confusion_matrix"] == in_place["confusion_matrix"]
    # the checkpoint alone knows its input size (32 px here, not the backbone's 224)
    hparams = torch.load(lone, weights_only=True)["hyper_parameters"]
    class_names = json.loads((relative_run / "test" / "metrics.json").read_text())["class_names"]
    assert hparams["normalization"]["image_size"] == 32 and hparams["class_names"] == class_names
    main(["export", str(lone), "--out", str(tmp_path / "lb"), "--images", str(relative_run.parents[1] / "data")])
    assert json.loads((tmp_path / "lb" / "metadata.json").read_text())["input"]["image_size"] == 32


def test_a_moved_run_whose_data_is_gone_names_the_flag_and_works_with_it(relative_run, tmp_path):
    moved = tmp_path / "run"
    shutil.copytree(relative_run, moved)
    config = (moved / "config.yaml").read_text()
    recorded = str(relative_run.parents[1] / "data")
    (moved / "config.yaml").write_text(config.replace(recorded, str(tmp_path / "gone")))
    with pytest.raises(RunError, match="--data_dir"):
        main(["test", str(moved), "--out", str(tmp_path / "t")])
    metrics = main(["test", str(moved), "--data_dir", recorded, "--out", str(tmp_path / "t")])
    assert metrics["n"] == 16


def test_trainer_arguments_we_never_name_pass_through_yaml_and_flags(tiny_data, tmp_path):
    (tmp_path / "c.yaml").write_text("trainer:\n  accumulate_grad_batches: 2\n  max_epochs: 1\n")
    common = [
        "--data.data_dir",
        str(tiny_data),
        *TINY_FIT,
        "--trainer.runs_dir",
        str(tmp_path),
        "--test_after",
        "false",
    ]
    main(["fit", "--config", str(tmp_path / "c.yaml"), *common, "--trainer.run_name", "acc"])
    main(["fit", *common, "--trainer.max_epochs", "1", "--trainer.run_name", "plain"])
    main(["fit", *common, "--trainer.max_steps", "3", "--trainer.run_name", "steps"])
    step = {
        n: torch.load(tmp_path / n / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
        for n in ("acc", "plain", "steps")
    }
    assert step["plain"] == 16 and step["acc"] == 8 and step["steps"] == 3  # 128 training images, batches of 8


LAYERS = {
    "errors": 0,
    "io": 0,
    "images": 0,
    "runs": 0,
    "extras": 0,
    "answers": 0,
    "pixels": 0,
    "marks": 0,
    "metrics": 0,
    "data": 1,
    "models": 2,
    "evaluation": 3,
    "deploy": 3,
    "bench": 3,
    "commands": 4,
    "cli": 5,
    "__main__": 5,
}


def import_graph() -> dict[str, set[str]]:
    """module -> package modules it imports (at the top or inside functions)."""
    modules = {
        ".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): p
        for p in PACKAGE.rglob("*.py")
    }
    graph = {m: set() for m in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            graph[name] |= {t for t in targets if t in modules and t != name and not t.endswith("__init__")}
    return graph


def test_imports_point_down_the_layers_and_never_cycle():
    graph = import_graph()
    layer = {m: LAYERS[m.split(".")[1]] for m in graph if m != "kvasir_mobileone" and "." in m}
    upward = [f"{a} -> {b}" for a, targets in graph.items() for b in targets if a in layer and layer[b] > layer[a]]
    assert not upward, upward
    state: dict[str, int] = {}

    def visit(node, path):
        state[node] = 1
        for nxt in graph[node]:
            assert state.get(nxt) != 1, "import cycle: " + " -> ".join([*path, nxt])
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for module in graph:
        if module not in state:
            visit(module, [module])


def test_every_third_party_import_is_a_declared_dependency():
    import importlib.metadata
    import sys

    import tomllib

    project = tomllib.loads((PACKAGE.parents[1] / "pyproject.toml").read_text())["project"]
    # the optional extras count (`mobile`: imported only when asked for, with a message naming the extra)
    optional = [d for extra, deps in project["optional-dependencies"].items() if extra != "dev" for d in deps]
    declared = {re.split(r"[<>=\[ ]", d)[0].lower().replace("_", "-") for d in project["dependencies"] + optional}
    distributions = importlib.metadata.packages_distributions()
    imported = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"kvasir_mobileone"}
    undeclared = {
        m: distributions.get(m)
        for m in third_party
        if not {d.lower().replace("_", "-") for d in distributions.get(m, [m])} & declared
    }
    assert not undeclared, undeclared
