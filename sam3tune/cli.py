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


def _add_data(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="inspect a dataset or write a synthetic one")
    data.set_defaults(handler=lambda args: data.print_help() or 2)
    actions = data.add_subparsers(dest="data_command", metavar="ACTION")

    inspect = actions.add_parser(
        "inspect",
        help="show what the loader makes of a dataset: counts, queries, every problem",
        description="PATH is a Roboflow export root, one split folder, or a COCO JSON file. "
        "Exit status 1 when a split cannot be used.",
    )
    inspect.add_argument("path", type=Path, help="dataset root, split folder or COCO JSON file")
    inspect.add_argument("--json", action="store_true", help="print one JSON document (schema: docs/data.md)")
    inspect.add_argument("--images", type=Path, default=None, help="image folder of a COCO JSON file")
    inspect.add_argument(
        "--negatives",
        default="all",
        help="negative queries per image: all, none or a number k (default: all)",
    )
    inspect.add_argument(
        "--max-objects", type=int, default=200, help="cap on targets per query (default: 200)"
    )
    inspect.add_argument(
        "--prompts", type=Path, default=None, help="YAML/JSON map category name or id -> prompt"
    )
    inspect.add_argument("--keep-unused", action="store_true", help="also query categories without instances")

    def run_inspect(args: argparse.Namespace) -> int:
        from sam3tune.data import DataConfig
        from sam3tune.data.inspection import run_inspect

        negatives = int(args.negatives) if args.negatives.isdigit() else args.negatives
        if negatives not in ("all", "none") and not isinstance(negatives, int):
            inspect.error(f"--negatives must be all, none or a number, got {args.negatives!r}")
        config = DataConfig(
            negatives=negatives,
            max_objects_per_query=args.max_objects,
            prompts=args.prompts,
            keep_unused_categories=args.keep_unused,
        )
        return run_inspect(args.path, as_json=args.json, config=config, image_dir=args.images)

    inspect.set_defaults(handler=run_inspect)

    synth = actions.add_parser(
        "synth",
        help="write a synthetic dataset of coloured shapes (Roboflow layout)",
        description="Coloured shapes on textured backgrounds with multi-word prompts "
        "('red circle', ...) and polygon masks, in OUT/train, OUT/valid, OUT/test.",
    )
    synth.add_argument("out", type=Path, help="output folder")
    synth.add_argument("--images", type=int, required=True, help="number of training images")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    synth.add_argument(
        "--valid-images", type=int, default=None, help="validation images (default: images/4, >= 1)"
    )
    synth.add_argument("--test-images", type=int, default=None, help="test images (default: images/4, >= 1)")
    synth.add_argument("--size", type=int, default=256, help="image side in pixels (default: 256)")
    synth.add_argument("--preset", default="basic", help="category preset: basic, colours, shapes, binding")

    def run_synth(args: argparse.Namespace) -> int:
        from sam3tune.data.synth import PRESETS, SynthConfig, generate

        if args.preset not in PRESETS:
            synth.error(f"--preset must be one of {', '.join(PRESETS)}, got {args.preset!r}")
        if args.images < 1:
            synth.error("--images must be at least 1")
        default_eval = max(1, args.images // 4)
        config = SynthConfig(
            image_size=(args.size, args.size),
            categories=args.preset,
            splits=(
                ("train", args.images),
                ("valid", default_eval if args.valid_images is None else args.valid_images),
                ("test", default_eval if args.test_images is None else args.test_images),
            ),
            seed=args.seed,
        )
        summary = generate(config, args.out)
        for split, count in summary.images.items():
            print(f"{args.out / split}: {count} images, {summary.objects[split]} objects")
        return 0

    synth.set_defaults(handler=run_synth)


# One entry per sub-command, in the order `sam3tune --help` lists them.
_COMMANDS: tuple = (_add_data, _add_train)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return 2
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
