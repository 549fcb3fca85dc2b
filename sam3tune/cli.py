"""The ``sam3tune`` command line: argument parsing only; every command calls into its module.

Each ``_add_<command>`` function declares one sub-command and sets ``handler`` to a function of
the parsed arguments that returns the process exit status. Heavy imports happen inside handlers so
that ``sam3tune --help`` is instant.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from sam3tune import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sam3tune",
        description="Fine-tune SAM 3 on COCO / Roboflow data with the official recipe.",
    )
    parser.add_argument("--version", action="version", version=f"sam3tune {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in _COMMANDS:
        add(sub)
    return parser


# One entry per sub-command, in the order `sam3tune --help` lists them.
_COMMANDS: tuple = ()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return 2
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
