"""The ``sam3tune`` command line: argument parsing only; every command calls into its module.

Each ``_add_<command>`` function declares one sub-command and sets ``handler`` to a function of
the parsed arguments that returns the process exit status. Heavy imports happen inside handlers so
that ``sam3tune --help`` is instant.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

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


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="COCO box/mask AP, cgF1 and prompt specificity of a model or of a predictions file",
        description="Evaluate a model on a dataset split (every image x every category prompt, negatives "
        "included), optionally side by side with a baseline model, or evaluate a COCO results file "
        "against COCO ground truth without any model. Writes eval.json and eval.md.",
    )
    source = p.add_argument_group("what to evaluate (either --model/--data or --predictions/--gt)")
    source.add_argument("--model", help="model spec: a run/checkpoint directory or a named model")
    source.add_argument("--data", type=Path, help="dataset root (COCO / Roboflow layout)")
    source.add_argument("--split", default="valid", help="dataset split (default: valid)")
    source.add_argument("--baseline", help="second model spec evaluated the same way, reported side by side")
    source.add_argument("--predictions", type=Path, help="COCO results JSON (no model is run)")
    source.add_argument("--gt", type=Path, help="COCO annotation JSON the predictions refer to")
    p.add_argument("--out", type=Path, default=Path("eval"), help="report directory (default: ./eval)")
    p.add_argument("--config", type=Path, help="YAML file with EvalConfig settings")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="EvalConfig override, repeatable (e.g. cgf1_score_threshold=0.4)",
    )
    p.add_argument("--device", default=None, help="torch device for --model (default: cuda if available)")
    p.set_defaults(handler=_run_eval, parser=p)


def _run_eval(args: argparse.Namespace) -> int:
    from sam3tune.config import load_config
    from sam3tune.eval import command
    from sam3tune.eval.config import EvalConfig

    config = load_config(EvalConfig, args.config, args.overrides)
    if args.predictions is not None or args.gt is not None:
        if args.predictions is None or args.gt is None or args.model or args.baseline:
            args.parser.error("--predictions needs --gt, and neither goes with --model/--baseline")
        _, markdown = command.eval_predictions_file(args.predictions, args.gt, args.out, config)
    elif args.model and args.data:
        _, markdown = command.eval_model(
            args.model, args.data, args.split, args.out, config, baseline=args.baseline, device=args.device
        )
    else:
        args.parser.error("give --model and --data, or --predictions and --gt")
    print(markdown)
    print(f"reports written to {args.out}/eval.json and {args.out}/eval.md")
    return 0


# One entry per sub-command, in the order `sam3tune --help` lists them.
_COMMANDS: tuple = (_add_eval,)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return 2
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
