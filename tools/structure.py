"""The package's shape in figures: modules, the largest ones, functions, the longest ones, functions over 60 lines and
over 8 parameters, parameters per function, `print` calls below commands/, formatter-skip comments, the modules that
spell the model-input description's keys, and README lines. `python tools/structure.py [REPO_ROOT]` (default: this
checkout)."""

from __future__ import annotations

import ast
import statistics
import sys
from pathlib import Path

# the keys of the serialized model-input description (a checkpoint's, a bundle's metadata.json "input")
# (mean and std left out: a cv summary's figures use those words too)
MODEL_INPUT_KEYS = {"image_size", "interpolation", "mask", "field_of_view", "field_of_view_sha256"}


def spells_model_input(tree: ast.AST) -> bool:
    """True when a module reads or writes the serialized model-input description by its keys: d["mean"],
    d.get("mask"), {"image_size": ...}."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
            key = node.slice.value
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
            key = node.args[0].value if node.args and isinstance(node.args[0], ast.Constant) else None
        else:
            key = None
        if key in MODEL_INPUT_KEYS:
            return True
        if isinstance(node, ast.Dict) and any(
            isinstance(k, ast.Constant) and k.value in MODEL_INPUT_KEYS for k in node.keys
        ):
            return True
    return False


def figures(root: Path) -> dict:
    package = root / "src" / "kvasir_mobileone"
    modules = sorted(package.rglob("*.py"))
    functions, prints_below, skips, sizes, spellers = [], 0, 0, [], []
    for path in modules:
        text = path.read_text()
        sizes.append((len(text.splitlines()), path.relative_to(package).as_posix()))
        if spells_model_input(ast.parse(text)):
            spellers.append(path.relative_to(package).as_posix())
        skips += text.count("# fmt" + ": skip")
        name = path.relative_to(package).as_posix()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                args = node.args
                count = len(args.posonlyargs) + len(args.args) + len(args.kwonlyargs)
                count -= 1 if args.args and args.args[0].arg in ("self", "cls") else 0
                functions.append((node.end_lineno - node.lineno + 1, f"{name}:{node.name}", count))
            below = not name.startswith("commands/") and name != "cli.py"
            if below and isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                prints_below += 1
    functions.sort(reverse=True)
    widest = max(functions, key=lambda f: f[2])
    sizes.sort(reverse=True)
    readme = root / "README.md"
    return {
        "modules": len(modules),
        "largest_modules": [f"{name} ({lines} lines)" for lines, name in sizes[:5]],
        "functions": len(functions),
        "longest": [f"{name} ({lines} lines)" for lines, name, _ in functions[:5]],
        "functions_over_60_lines": [f"{name} ({lines})" for lines, name, _ in functions if lines > 60],
        "functions_over_8_parameters": [
            f"{name} ({n})" for _, name, n in sorted(functions, key=lambda f: -f[2]) if n > 8
        ],
        "median_parameters": statistics.median(f[2] for f in functions),
        "most_parameters": f"{widest[1]} ({widest[2]})",
        "prints_below_commands": prints_below,
        "fmt_skip_in_src": skips,
        "modules_spelling_model_input_keys": spellers,
        "readme_lines": len(readme.read_text().splitlines()) if readme.is_file() else 0,
    }


if __name__ == "__main__":
    for key, value in figures(Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1])).items():
        print(f"{key}: {', '.join(value) if isinstance(value, list) else value}")
