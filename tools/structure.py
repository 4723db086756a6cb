"""The package's shape in figures: modules, functions, the longest ones, parameters per function, `print` calls below
commands/ and formatter-skip comments. `python tools/structure.py [REPO_ROOT]` (default: this checkout)."""

from __future__ import annotations

import ast
import statistics
import sys
from pathlib import Path


def figures(root: Path) -> dict:
    package = root / "src" / "kvasir_mobileone"
    modules = sorted(package.rglob("*.py"))
    functions, prints_below, skips = [], 0, 0
    for path in modules:
        text = path.read_text()
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
    return {
        "modules": len(modules),
        "functions": len(functions),
        "longest": [f"{name} ({lines} lines)" for lines, name, _ in functions[:5]],
        "median_parameters": statistics.median(f[2] for f in functions),
        "most_parameters": f"{widest[1]} ({widest[2]})",
        "prints_below_commands": prints_below,
        "fmt_skip_in_src": skips,
    }


if __name__ == "__main__":
    for key, value in figures(Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1])).items():
        print(f"{key}: {', '.join(value) if isinstance(value, list) else value}")
