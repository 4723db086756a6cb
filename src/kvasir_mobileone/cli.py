"""The `kvasir` command: parses arguments and YAML configs from typed signatures, then delegates. A UserError
becomes one line on stderr and exit status 2; `--debug` (or KVASIR_DEBUG=1) shows the traceback too."""

from __future__ import annotations

import importlib
import json
import logging
import os
import re
import sys
import traceback
import warnings

from jsonargparse import auto_cli

from kvasir_mobileone.errors import UserError

# command -> the module of commands/ defining a function of that name (label-issues: label_issues). Only the module
# of the command being run is imported, so `kvasir predict` on a bundle never loads Lightning or timm.
COMMANDS = {
    name: f"kvasir_mobileone.commands.{name.replace('-', '_')}"
    for name in (
        "download",
        "synth",
        "check",
        "eda",
        "prepare",
        "fit",
        "test",
        "cv",
        "features",
        "compare",
        "label-issues",
        "audit",
        "export",
        "predict",
        "watch",
        "serve",
        "benchmark",
        "demo",
    )
}


LIST_COMMANDS = ("predict", "compare")  # their first argument is a list of paths given as plain words
# Flags renamed so that one concept has one name in every command: the old name still works, with a note on stderr,
# until the release after 0.2.0. command -> {old flag: new flag}
RENAMED = {
    "check": {"--data": "--data_dir"},
    "eda": {"--data": "--data_dir"},
    "prepare": {"--data": "--data_dir", "--size": "--image_size"},
    "benchmark": {"--data": "--data_dir", "--images": "--num_images", "--workers": "--num_workers"},
    "audit": {"--regions": "--mask_regions"},  # the regions the audit masks, named as fit's --data.mask_regions
}


def _command(name: str):
    return getattr(importlib.import_module(COMMANDS[name]), name.replace("-", "_"))


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


class _Notes(logging.Handler):
    """The progress notes of the layers below commands/ (loggers under kvasir_mobileone), as plain lines on
    stdout, beside what the commands print."""

    def emit(self, record: logging.LogRecord) -> None:
        print(self.format(record), flush=True)


def show_notes() -> None:
    """Route the package's notes to stdout, once per process."""
    package = logging.getLogger("kvasir_mobileone")
    if not any(isinstance(h, _Notes) for h in package.handlers):
        package.addHandler(_Notes())
        package.setLevel(logging.INFO)
        package.propagate = False


def renamed_flags(args: list[str]) -> list[str]:
    """`kvasir benchmark --data DIR` -> `--data_dir DIR` (and --data=DIR), with one note on stderr per old flag."""
    renamed = RENAMED.get(next((a for a in args if a in COMMANDS), ""), {})
    out = []
    for arg in args:
        flag, equals, value = arg.partition("=")
        if flag in renamed:
            print(
                f"note: {flag} is now {renamed[flag]}, one name in every command; {flag} works until the next release.",
                file=sys.stderr,
            )
            arg = renamed[flag] + equals + value
        out.append(arg)
    return out


REGION_FLAGS = (
    "--mask_regions",
    "--regions",
    "--data.mask_regions",
)  # lists of region names and name:x0,y0,x1,y1 boxes


def _region_list(value: str) -> str:
    """`[bottom-left-box, logo:0.8,0,1,0.1]` -> `["bottom-left-box", "logo:0.8,0,1,0.1"]`: YAML would split a box at
    its commas; the numbers after a `name:` item belong to it."""
    if not (value.startswith("[") and value.endswith("]") and ":" in value):
        return value
    items: list[str] = []
    for token in (t.strip().strip("'\"") for t in value[1:-1].split(",")):
        if items and ":" in items[-1] and items[-1].count(",") < 3 and re.fullmatch(r"[-+0-9.eE]+", token):
            items[-1] += "," + token
        else:
            items.append(token)
    return json.dumps(items)


def quote_regions(args: list[str]) -> list[str]:
    """Region lists on the command line as the README writes them (see _region_list)."""
    out = list(args)
    for i, arg in enumerate(out):
        flag, equals, value = arg.partition("=")
        if flag in REGION_FLAGS and equals:
            out[i] = f"{flag}={_region_list(value)}"
        elif arg in REGION_FLAGS and i + 1 < len(out):
            out[i + 1] = _region_list(out[i + 1])
    return out


def main(args: list[str] | None = None):
    """Run a `kvasir` command in-process and return what the command returns."""
    show_notes()
    args = sys.argv[1:] if args is None else list(args)
    for command in LIST_COMMANDS:
        if command in args:
            args = _gather_positionals(args, command)
            break
    args = quote_regions(renamed_flags(args))
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
