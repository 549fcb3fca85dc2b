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


def _add_train(sub) -> None:
    parser = sub.add_parser(
        "train",
        help="fine-tune SAM 3 with the official recipe",
        description=(
            "Fine-tune SAM 3 on a COCO / Roboflow dataset with the official recipe. Settings come from the "
            "defaults, then --config, then key=value overrides (e.g. optim.lr_transformer=1e-4 "
            "loop.epochs=10 model.finetune.mode=lora). Multi-GPU: torchrun --nproc_per_node=N -m sam3tune "
            "train ..."
        ),
    )
    parser.add_argument("--data", metavar="PATH", help="dataset root or COCO JSON (sets data.root)")
    parser.add_argument("--config", metavar="C.yaml", help="YAML file with config values")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR exactly")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")

    def handler(args) -> int:
        from sam3tune.train.command import run_train_command

        return run_train_command(args.data, args.config, args.overrides, args.resume)

    parser.set_defaults(handler=handler)


# One entry per sub-command, in the order `sam3tune --help` lists them.
_COMMANDS: tuple = (_add_train,)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return 2
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
