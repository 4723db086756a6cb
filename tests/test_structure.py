"""The house keeps its shape: one owner per contract (runs.py spells the run folder, the README's table is its
table), thin commands on top (every user command lives in commands/, nothing below it prints), and the formatter
decides the layout."""

import ast
import re
from pathlib import Path

from kvasir_mobileone.cli import COMMANDS
from kvasir_mobileone.runs import LAYOUT

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "kvasir_mobileone"
# a run file's name as runs.py spells it: every string constant there that is a file name
FILE_NAME = re.compile(r"[\w.-]*\.(csv|json|png|md|yaml|ckpt|onnx|pte|safetensors|mlpackage|npz)")
# standalone code for people who do not install the package (the model card shows it): it cannot import runs.py
STANDALONE = {"deploy/onnxruntime_example.py"}


def run_file_names() -> set[str]:
    """The names runs.py spells: its file-name constants (f-string parts included) and the logger folders."""
    from kvasir_mobileone.runs import LOGGER_FOLDERS

    tree = ast.parse((PACKAGE / "runs.py").read_text())
    spelled = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    # (a logger folder named as its logger, wandb or tensorboard, is spelled wherever the logger is chosen)
    return {name for name in spelled if FILE_NAME.fullmatch(name)} | {v for k, v in LOGGER_FOLDERS.items() if v != k}


def modules() -> dict[str, ast.Module]:
    return {p.relative_to(PACKAGE).as_posix(): ast.parse(p.read_text()) for p in sorted(PACKAGE.rglob("*.py"))}


def test_the_readme_run_folder_table_is_runs_layout():
    section = (ROOT / "README.md").read_text().split("## A run folder")[1].split("\n## ")[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    table = {cells[0]: cells[1] for cells in ([c.strip() for c in r.strip().strip("|").split(" | ")] for r in rows)}
    assert table == LAYOUT


def test_run_files_are_spelled_in_runs_py_alone():
    """Every file of a run, a test report, a cv folder, an audit and a bundle is named in runs.py, and nowhere else."""
    names = run_file_names()
    # the run folder's, the report's, the cv folder's, the audit's and the bundle's files are among them
    for expected in ("config.yaml", "split_manifest.csv", "best.ckpt", "predictions.csv", "metrics.json", "report.md"):
        assert expected in names
    for expected in ("audit.json", "frame_maps.png", "cv_summary.json", "metadata.json", "model.onnx", "features.npz"):
        assert expected in names
    spelled = [
        f"{name}:{node.lineno} {node.value}"
        for name, tree in modules().items()
        if name != "runs.py" and name not in STANDALONE
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names
    ]
    assert not spelled, spelled
    # a cv folder's folds are named (and found again) through runs.py: no "fold" + number spelled elsewhere
    from kvasir_mobileone.runs import FOLD_PREFIX

    folds = [
        f"{name}:{node.lineno}"
        for name, tree in modules().items()
        if name != "runs.py"
        for node in ast.walk(tree)
        if isinstance(node, ast.JoinedStr)
        and any(isinstance(v, ast.Constant) and v.value == FOLD_PREFIX for v in node.values)
    ]
    assert not folds, folds


def test_the_model_input_description_is_read_in_images_py_alone():
    """Only images.ModelInput reads the serialized model input by its keys; everything else asks the object."""
    keys = {"image_size", "mask", "field_of_view_sha256", "interpolation", "field_of_view"}
    own = {"images.py", *STANDALONE}
    # these read other things that share a key's word: timm's data config and the image cache's index
    # (interpolation), audit.json's field of view
    other_schemas = {
        "models/backbone.py",
        "data/cache.py",
        "deploy/card.py",
        "commands/audit.py",
        "evaluation/audit.py",
        "evaluation/audit_report.py",
    }
    reads = []
    for name, tree in modules().items():
        if name in own:
            continue
        for node in ast.walk(tree):
            key = None
            if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
                key = node.slice.value
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
                key = node.args[0].value if node.args and isinstance(node.args[0], ast.Constant) else None
            if key in keys and not (name in other_schemas and key in ("interpolation", "field_of_view")):
                reads.append(f"{name}:{node.lineno} {key}")
    assert not reads, reads


def test_every_user_command_is_a_function_in_commands_and_nothing_below_prints():
    for command, module in COMMANDS.items():
        function = command.replace("-", "_")  # kvasir label-issues is commands/label_issues.py:label_issues
        assert module == f"kvasir_mobileone.commands.{function}"
        tree = ast.parse((PACKAGE / "commands" / f"{function}.py").read_text())
        assert any(isinstance(n, ast.FunctionDef) and n.name == function for n in tree.body), command
    printing = [
        f"{name}:{node.lineno}"
        for name, tree in modules().items()
        if not name.startswith("commands/") and name != "cli.py" and name not in STANDALONE
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print"
    ]
    assert not printing, f"print below commands/ (return values or log a note instead): {printing}"


def test_the_formatter_decides_the_layout():
    skipped = [
        f"{path.relative_to(ROOT)}:{k}"
        for folder in ("src", "tests", "tools")
        for path in (ROOT / folder).rglob("*.py")
        for k, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"#\s*fmt:\s*(skip|off)", line)
    ]
    assert not skipped, skipped
    ruff = (ROOT / "pyproject.toml").read_text()
    assert '"RUF100"' in ruff  # ruff check (in make test) refuses a noqa that silences nothing


def test_the_readme_guides_and_the_architecture_page_names_every_module():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200, "the README is a guide: move detail to a page of docs/"
    for page in re.findall(r"\]\((docs/[\w.]+\.md)\)", readme):
        assert (ROOT / page).is_file(), page
    drawing = (ROOT / "docs" / "architecture.md").read_text().split("```")[1]
    unnamed = [
        name
        for name in modules()
        if not name.endswith("__init__.py")
        and name not in ("__main__.py", "cli.py")
        and not name.startswith("commands/")
        and not re.search(rf"\b{Path(name).stem}\b", drawing)
    ]
    assert not unnamed, f"docs/architecture.md does not draw {unnamed}"


def test_the_pixel_colour_rules_live_in_data_pixels_alone():
    """Frame black, overlay green and grey are decided in pixels.py: no other module compares a channel with
    another plus a margin, or takes a channel spread (synth draws them, it does not detect them)."""
    found = []
    for name, tree in modules().items():
        if name in ("pixels.py", "data/synth.py"):
            continue
        for node in ast.walk(tree):
            margin = (
                isinstance(node, ast.Compare)
                and isinstance(node.comparators[0], ast.BinOp)
                and isinstance(node.comparators[0].op, ast.Add)
                and isinstance(node.comparators[0].right, ast.Constant)
            )
            text = ast.unparse(node)
            channels = any(f"{f}(axis={a})" in text for f in ("max", "min") for a in ("-1", "2"))
            spread = isinstance(node, ast.BinOp) and isinstance(node.op, ast.Sub) and channels
            if margin or spread:
                found.append(f"{name}:{node.lineno} {ast.unparse(node)}")
    assert not found, found
