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


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="COCO box/mask AP, cgF1 and prompt specificity of a model or of a predictions file",
        description="Evaluate a model on a dataset split (every image x every category prompt, negatives "
        "included), optionally side by side with a baseline model, or evaluate a COCO results file "
        "against COCO ground truth without any model. Writes eval.json and eval.md.",
    )
    source = p.add_argument_group("what to evaluate (either --model/--data or --predictions/--gt)")
    source.add_argument("--model", help="model spec: a save_pretrained directory, a hub id or tiny/small")
    source.add_argument("--data", type=Path, help="dataset root (COCO / Roboflow layout)")
    source.add_argument("--split", default="valid", help="dataset split (default: valid)")
    source.add_argument("--baseline", help="second model spec evaluated the same way, reported side by side")
    source.add_argument("--prompts", type=Path, help="prompt map (category -> prompt text) used in training")
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
    from sam3tune.config import ConfigError, load_config
    from sam3tune.data import DataConfig, DataError
    from sam3tune.eval import command
    from sam3tune.eval.coco_results import ResultsError
    from sam3tune.eval.config import EvalConfig
    from sam3tune.eval.ground_truth import GroundTruthError

    if args.predictions is not None or args.gt is not None:
        if args.predictions is None or args.gt is None or args.model or args.baseline:
            args.parser.error("--predictions needs --gt, and neither goes with --model/--baseline")
    elif not (args.model and args.data):
        args.parser.error("give --model and --data, or --predictions and --gt")
    try:
        config = load_config(EvalConfig, args.config, args.overrides)
        if args.predictions is not None:
            _, markdown = command.eval_predictions_file(args.predictions, args.gt, args.out, config)
        else:
            data = DataConfig(root=args.data, val=args.split, prompts=args.prompts)
            _, _, markdown = command.eval_model(
                args.model, data, args.out, config, baseline=args.baseline, device=args.device
            )
    except (ConfigError, DataError, ResultsError, GroundTruthError, FileNotFoundError) as err:
        args.parser.error(str(err))
    print(markdown)
    print(f"reports written to {args.out}/eval.json and {args.out}/eval.md")
    return 0


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="detect and segment text prompts in images: COCO results JSON + overlay PNGs",
        description="Ask every --prompt on every image (files, or folders of images). Writes "
        "OUT/predictions.json (COCO results; category i = i-th prompt), OUT/index.json (images and "
        "categories) and OUT/overlays/<image>.png.",
    )
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE_OR_DIR")
    p.add_argument(
        "--model", required=True, help="model spec: a save_pretrained directory, a hub id or tiny/small"
    )
    p.add_argument("--prompt", dest="prompts", action="append", required=True, help="text prompt, repeatable")
    p.add_argument(
        "--out", type=Path, default=Path("predictions"), help="output folder (default: ./predictions)"
    )
    p.add_argument("--score-threshold", type=float, default=0.5, help="keep detections scoring >= this")
    p.add_argument("--nms", type=float, default=None, metavar="IOU", help="greedy box NMS at this IoU (off)")
    p.add_argument("--max-detections", type=int, default=100, help="per prompt and image (default: 100)")
    p.add_argument("--no-overlays", action="store_true", help="write the JSON only")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    p.set_defaults(handler=_run_predict, parser=p)


def _run_predict(args: argparse.Namespace) -> int:
    from sam3tune.eval.config import PostprocessConfig
    from sam3tune.predict import Predictor, collect_images

    try:
        images = collect_images(args.images)
        config = PostprocessConfig(
            score_threshold=args.score_threshold,
            nms_iou_threshold=args.nms,
            max_detections=args.max_detections,
        )
        predictor = Predictor.load(args.model, config=config, device=args.device)
        results = predictor.predict_files(images, args.prompts, args.out, overlays=not args.no_overlays)
    except (FileNotFoundError, ValueError) as err:
        args.parser.error(str(err))
    print(f"{len(results)} detections on {len(images)} images written to {args.out}/predictions.json")
    return 0


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


def _add_doctor(sub) -> None:
    parser = sub.add_parser(
        "doctor",
        help="explain the first training step and catch the classic failures before training",
        description=(
            "Load the run exactly as `sam3tune train` would (same config, same overrides) and check it: data "
            "report, one training step on the first batch with every loss term (raw, weight, share), the "
            "expected total, trainable parameters, learning rates, an estimate of GPU memory, and flags "
            "with their fixes. Exit status 1 when a flag is an error, 2 for bad input. See docs/doctor.md."
        ),
    )
    parser.add_argument("--data", metavar="PATH", help="dataset root or COCO JSON (sets data.root)")
    parser.add_argument(
        "--model", metavar="M", help="model: hub id, save_pretrained dir, tiny/small (model.name)"
    )
    parser.add_argument("--config", metavar="C.yaml", help="train config YAML (as for sam3tune train)")
    parser.add_argument(
        "--ladder", action="store_true", help="also one step per memory rung: the memory of each (slower)"
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")

    def handler(args) -> int:
        from sam3tune.doctor.command import run_doctor_command

        return run_doctor_command(args.data, args.model, args.config, args.overrides, args.ladder)

    parser.set_defaults(handler=handler)


def _add_demo(sub) -> None:
    from sam3tune.demo.settings import DemoSettings  # a plain dataclass: no torch at start-up

    parser = sub.add_parser(
        "demo",
        help="CPU demo: fine-tune a small pretrained SAM 3 on unseen shapes, zero-shot vs tuned",
        description=(
            "Fine-tune the small SAM 3 shipped with sam3tune (pretrained on five shapes) on three shapes "
            "whose words it has never seen, with the real pipeline (synthetic data -> train -> eval -> "
            "predict), and print held-out box/mask AP, cgF1 and false-fire rate before and after, with the "
            "paths of the report, loss curve and overlays. No GPU, no download; a few minutes on 2 CPU "
            "cores. See docs/demo.md."
        ),
    )
    defaults = DemoSettings()
    parser.add_argument(
        "--out", type=Path, default=defaults.out, help="output folder, new or empty (default: %(default)s)"
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=defaults.steps,
        help="fine-tuning steps of 16 images (default: %(default)s)",
    )
    for option, name, what in (
        ("--train-images", "train_images", "fine-tuning images"),
        ("--heldout-images", "heldout_images", "held-out images"),
        ("--overlays", "overlays", "held-out images drawn"),
        ("--seed", "seed", "seed of the synthetic images"),
    ):
        parser.add_argument(
            option, type=int, default=getattr(defaults, name), help=f"{what} (default: %(default)s)"
        )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument(
        "--base",
        type=Path,
        default=None,
        help="base model: a directory or an architecture name (default: the shipped base)",
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="fine-tuning config overrides")

    def handler(args) -> int:
        from sam3tune.demo.command import run_demo_command

        for name in ("steps", "train_images", "heldout_images"):
            if getattr(args, name) < 1:
                parser.error(f"--{name.replace('_', '-')} must be at least 1")
        settings = DemoSettings(
            out=args.out,
            steps=args.steps,
            train_images=args.train_images,
            heldout_images=args.heldout_images,
            overlays=args.overlays,
            seed=args.seed,
            base=args.base,
            overrides=list(args.overrides),
        )
        return run_demo_command(settings, args.threads)

    parser.set_defaults(handler=handler)


# One entry per sub-command, in the order `sam3tune --help` lists them.
_COMMANDS: tuple = (_add_demo, _add_data, _add_train, _add_doctor, _add_eval, _add_predict)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return 2
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
