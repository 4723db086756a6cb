"""The `kvasir` command: parses arguments and YAML configs from typed signatures, then delegates."""

from __future__ import annotations

import sys

from jsonargparse import auto_cli


def _commands() -> dict:
    from kvasir_mobileone.demo import demo
    from kvasir_mobileone.download import download
    from kvasir_mobileone.eda import eda
    from kvasir_mobileone.evaluate import test
    from kvasir_mobileone.synth import synth
    from kvasir_mobileone.train import fit

    return {"download": download, "synth": synth, "eda": eda, "fit": fit, "test": test, "demo": demo}


def main(args: list[str] | None = None) -> None:
    """Entry point of the `kvasir` command."""
    auto_cli(_commands(), args=args, as_positional=True)


if __name__ == "__main__":
    main(sys.argv[1:])
