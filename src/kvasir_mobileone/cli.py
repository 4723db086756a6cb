"""The `kvasir` command: parses arguments and YAML configs from typed signatures, then delegates."""

from __future__ import annotations

import importlib
import json
import sys

from jsonargparse import auto_cli

# command -> module defining a function of that name. Only the module of the command being run is imported, so
# `kvasir predict` on an exported bundle never loads Lightning or timm, and every command starts fast.
COMMANDS = {
    "download": "kvasir_mobileone.download",
    "synth": "kvasir_mobileone.synth",
    "eda": "kvasir_mobileone.eda",
    "fit": "kvasir_mobileone.train",
    "test": "kvasir_mobileone.evaluate",
    "check": "kvasir_mobileone.check",
    "prepare": "kvasir_mobileone.cache",
    "export": "kvasir_mobileone.export",
    "features": "kvasir_mobileone.features",
    "compare": "kvasir_mobileone.compare",
    "cv": "kvasir_mobileone.cv",
    "predict": "kvasir_mobileone.predict",
    "benchmark": "kvasir_mobileone.benchmark",
    "demo": "kvasir_mobileone.demo",
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


def entry() -> None:
    """Console script: the exit status is 0 on success (a returned value would become sys.exit's message)."""
    main()


if __name__ == "__main__":
    entry()
