"""The `kvasir` command: parses arguments and YAML configs from typed signatures, then delegates. A UserError
becomes one line on stderr and exit status 2; `--debug` (or KVASIR_DEBUG=1) shows the traceback too."""

from __future__ import annotations

import importlib
import json
import os
import sys
import traceback
import warnings

from jsonargparse import auto_cli

from kvasir_mobileone.errors import UserError

# command -> module defining a function of that name. Only the module of the command being run is imported, so
# `kvasir predict` on an exported bundle never loads Lightning or timm, and every command starts fast.
COMMANDS = {
    "download": "kvasir_mobileone.data.download",
    "synth": "kvasir_mobileone.data.synth",
    "check": "kvasir_mobileone.data.check",
    "eda": "kvasir_mobileone.data.eda",
    "prepare": "kvasir_mobileone.data.cache",
    "fit": "kvasir_mobileone.commands.fit",
    "test": "kvasir_mobileone.evaluation.testing",
    "cv": "kvasir_mobileone.commands.cv",
    "features": "kvasir_mobileone.evaluation.features",
    "compare": "kvasir_mobileone.evaluation.compare",
    "audit": "kvasir_mobileone.evaluation.audit",
    "export": "kvasir_mobileone.deploy.export",
    "predict": "kvasir_mobileone.deploy.predict",
    "serve": "kvasir_mobileone.deploy.serve",
    "benchmark": "kvasir_mobileone.commands.benchmark",
    "demo": "kvasir_mobileone.commands.demo",
}


LIST_COMMANDS = ("predict", "compare")  # their first argument is a list of paths given as plain words


def _command(name: str):
    return getattr(importlib.import_module(COMMANDS[name]), name)


def _gather_positionals(args: list[str], command: str) -> list[str]:
    """`kvasir predict a.jpg dir/ *.png --model m` -> one JSON list for the `inputs` argument (shells expand globs
    into many words; jsonargparse wants a list as one value). Every option takes one value: `--flag value`."""
    start = args.index(command) + 1
    positional, rest, i = [], args[:start], start
    while i < len(args):
        token = args[i]
        if token.startswith("-"):
            takes_value = "=" not in token and token not in ("-h", "--help") and i + 1 < len(args)
            rest += args[i : i + 1 + takes_value]
            i += 1 + takes_value
        else:
            positional.append(token)
            i += 1
    return rest[:start] + ([json.dumps(positional)] if positional else []) + rest[start:]


def main(args: list[str] | None = None):
    """Run a `kvasir` command in-process and return what the command returns."""
    args = sys.argv[1:] if args is None else list(args)
    for command in LIST_COMMANDS:
        if command in args:
            args = _gather_positionals(args, command)
            break
    chosen = [a for a in args if a in COMMANDS][:1]
    names = chosen if chosen and not args[0].startswith("-") else list(COMMANDS)
    return auto_cli({name: _command(name) for name in names}, args=args, as_positional=True)


def user_message(err: BaseException) -> str:
    """The error's own message; for one raised in a DataLoader worker, without the worker's traceback."""
    message = str(err)
    if "Original Traceback" in message:
        message = message.strip().splitlines()[-1].split(": ", 1)[-1]
    return message


def format_warning(message, category, filename, lineno, line=None) -> str:
    """The tool's own warnings as `warning: ...` (they speak to the user); other libraries' as Python writes them."""
    if f"{os.sep}kvasir_mobileone{os.sep}" in str(filename):
        return f"warning: {message}\n"
    return _python_format_warning(message, category, filename, lineno, line)


_python_format_warning = warnings.formatwarning


def entry() -> None:
    """Console script: exit status 0 on success, 2 with one line on stderr for a user's error."""
    warnings.formatwarning = format_warning
    args = sys.argv[1:]
    debug = "--debug" in args or os.environ.get("KVASIR_DEBUG", "") not in ("", "0")
    args = [a for a in args if a != "--debug"]
    try:
        main(args)
    except UserError as err:
        if debug:
            traceback.print_exc()
        print(f"error: {user_message(err)}", file=sys.stderr)
        if not debug:
            print("(run with --debug or KVASIR_DEBUG=1 for the traceback)", file=sys.stderr)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    entry()
