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
# the names of the run folder's files, which runs.py alone spells
RUN_FILES = {
    "config.yaml",
    "split_manifest.csv",
    "split_leaks.csv",
    "split_counts.json",
    "excluded.csv",
    "field_of_view.png",
    "model_input.png",
    "label_issues.csv",
    "data_problems.csv",
    "best.ckpt",
    "last.ckpt",
    "model_info.json",
    "temperature.json",
    "metrics.json",
    "predictions.csv",
    "report.md",
    "csv_logs",
}


def modules() -> dict[str, ast.Module]:
    return {p.relative_to(PACKAGE).as_posix(): ast.parse(p.read_text()) for p in sorted(PACKAGE.rglob("*.py"))}


def test_the_readme_run_folder_table_is_runs_layout():
    section = (ROOT / "README.md").read_text().split("## A run folder")[1].split("\n## ")[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    table = {cells[0]: cells[1] for cells in ([c.strip() for c in r.strip().strip("|").split(" | ")] for r in rows)}
    assert table == LAYOUT


def test_run_files_are_spelled_in_runs_py_alone():
    spelled = [
        f"{name}:{node.lineno} {node.value}"
        for name, tree in modules().items()
        if name != "runs.py"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in RUN_FILES
    ]
    assert not spelled, spelled


def test_every_user_command_is_a_function_in_commands_and_nothing_below_prints():
    for command, module in COMMANDS.items():
        function = command.replace("-", "_")  # kvasir label-issues is commands/label_issues.py:label_issues
        assert module == f"kvasir_mobileone.commands.{function}"
        tree = ast.parse((PACKAGE / "commands" / f"{function}.py").read_text())
        assert any(isinstance(n, ast.FunctionDef) and n.name == function for n in tree.body), command
    printing = [
        f"{name}:{node.lineno}"
        for name, tree in modules().items()
        if not name.startswith("commands/") and name != "cli.py"
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
