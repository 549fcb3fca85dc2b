"""The ``sam3tune`` command line: argument parsing only.

Every command has one pattern: ``sam3tune COMMAND [--config FILE] [key=value ...]``, where the YAML file
and the ``dotted.key=value`` overrides (on either side of the options) set the fields of the command's
own config dataclass; the few flags are for what is not configuration (input and output paths,
``--json``, ``--resume``) or are shortcuts that set one config key (``--data PATH`` = ``data.root=PATH``).
Each command's handler lives in its package's ``command.py``, is imported only when the command runs
(``sam3tune --help`` is instant), is called with the parsed arguments as keywords and returns the exit
status of a command that ran (0, or 1 when a check it reports failed, 130 when stopped). Problems the
user can fix are raised as :class:`~sam3tune.errors.UserError` and caught here only: one line
``sam3tune COMMAND: message`` on stderr, no traceback (``--debug`` or ``SAM3TUNE_DEBUG=1`` prints it),
and the exit status of the error's kind (:mod:`sam3tune.errors`).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from sam3tune import __version__
from sam3tune.config import is_override
from sam3tune.errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, UserError, describe_os_error


class _Parser(argparse.ArgumentParser):
    """A parser whose commands read ``key=value`` overrides anywhere among their other words: the words of
    that shape (``dotted.key=``, not an option's value) are taken out first, and the rest is parsed with
    positionals and options intermixed (``images --out DIR more_images`` works too)."""

    _inside = False

    def parse_known_args(self, args=None, namespace=None):
        if self._inside or "overrides" not in {action.dest for action in self._actions}:
            return super().parse_known_args(args, namespace)
        args = list(sys.argv[1:] if args is None else args)
        takes_value = {s for action in self._actions if action.nargs != 0 for s in action.option_strings}
        picked = {
            i
            for i, word in enumerate(args)
            if is_override(word) and (i == 0 or args[i - 1] not in takes_value)
        }
        self._inside = True
        try:
            rest = [word for i, word in enumerate(args) if i not in picked]
            namespace, extras = self.parse_known_intermixed_args(rest, namespace)
        finally:
            self._inside = False
        namespace.overrides = [args[i] for i in sorted(picked)] + list(namespace.overrides)
        return namespace, extras


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="sam3tune",
        description="Fine-tune SAM 3 on COCO / Roboflow data with the official recipe. Every command: "
        "sam3tune COMMAND [--config FILE] [key=value ...] (see COMMAND --help).",
    )
    parser.add_argument("--version", action="version", version=f"sam3tune {__version__}")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="print the traceback of an error, not only its message (also: SAM3TUNE_DEBUG=1)",
    )
    parser.set_defaults(show_help=parser.print_help)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in _COMMANDS:
        add(sub)
    return parser


def _command(sub, name: str, handler: str, config: str, **kwargs) -> argparse.ArgumentParser:
    """A sub-command whose settings are ``config`` (a dataclass, named for the help) from ``--config``
    and ``key=value`` overrides (see :func:`_overrides`), run by ``handler`` (``module:function``)."""
    parser = sub.add_parser(name, **kwargs)
    parser.add_argument("--config", metavar="FILE", help=f"YAML file with {config} values")
    parser.set_defaults(handler=handler)
    return parser


def _overrides(parser: argparse.ArgumentParser, config: str) -> None:
    """The ``key=value`` overrides: declared after the command's other positionals, which come first."""
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help=f"{config} overrides (e.g. a.b=1), anywhere"
    )


def _shortcuts(parser: argparse.ArgumentParser, model_key: str, data_key: str | None = "data.root") -> None:
    """``--model M`` (and ``--data PATH``): shortcuts that each set one config key."""
    parser.add_argument(
        "--model", metavar="M", help=f"hub id, save_pretrained dir, tiny/small (sets {model_key})"
    )
    if data_key is not None:
        parser.add_argument(
            "--data",
            metavar="PATH",
            help=f"dataset root (COCO, YOLO, label maps) or COCO JSON (sets {data_key})",
        )


def _add_train(sub) -> None:
    parser = _command(
        sub,
        "train",
        "sam3tune.train.command:run_train_command",
        "TrainConfig",
        help="fine-tune SAM 3 with the official recipe",
        description=(
            "Fine-tune SAM 3 on a COCO / Roboflow dataset with the official recipe. Settings come from the "
            "defaults, then --config, then key=value overrides (e.g. optim.lr_transformer=1e-4 "
            "loop.epochs=10 model.finetune.mode=lora). Multi-GPU: torchrun --nproc_per_node=N -m sam3tune "
            "train ..."
        ),
    )
    _shortcuts(parser, "model.name")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR exactly")
    parser.add_argument(
        "--allow-inexact-resume",
        action="store_true",
        help="with --resume: accept overrides that change the computation (seed, data, model, ...); "
        "recorded in RUN_DIR/resumes.jsonl",
    )
    _overrides(parser, "TrainConfig")


def _add_doctor(sub) -> None:
    parser = _command(
        sub,
        "doctor",
        "sam3tune.doctor.command:run_doctor_command",
        "TrainConfig",
        help="explain the first training step and catch the classic failures before training",
        description=(
            "Load the run exactly as `sam3tune train` would (same config, same overrides) and check it: data "
            "report, the trainer's first step on the first batch with every loss term (raw, weight, share), "
            "the expected total, trainable parameters, learning rates, an estimate of GPU memory, and flags "
            "with their fixes. Exit status 1 when a flag is an error, 2 for bad input. See docs/doctor.md."
        ),
    )
    _shortcuts(parser, "model.name")
    parser.add_argument(
        "--ladder", action="store_true", help="also one step per memory rung: the memory of each (slower)"
    )
    _overrides(parser, "TrainConfig")


def _add_eval(sub) -> None:
    parser = _command(
        sub,
        "eval",
        "sam3tune.eval.command:run_eval_command",
        "EvalRunConfig",
        help="COCO box/mask AP, cgF1 and prompt specificity of a model or of a predictions file",
        description=(
            "Evaluate a model on a dataset split (every image x every category prompt, negatives included), "
            "optionally side by side with a baseline model (baseline=M), or evaluate a COCO results file "
            "against COCO ground truth without any model (--predictions, --gt). Writes eval.json and "
            "eval.md. Keys: model, baseline, device, data.* (data.val: the split), batch_size, "
            "postprocess.*, ... (EvalRunConfig, docs/eval.md)."
        ),
    )
    _shortcuts(parser, "model")
    parser.add_argument("--predictions", type=Path, help="COCO results JSON to evaluate (no model is run)")
    parser.add_argument("--gt", type=Path, help="COCO annotation JSON the predictions refer to")
    parser.add_argument("--out", type=Path, default=Path("eval"), help="report folder (default: ./eval)")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the reports of an earlier run in --out"
    )
    _overrides(parser, "EvalRunConfig")


def _add_predict(sub) -> None:
    parser = _command(
        sub,
        "predict",
        "sam3tune.predict.command:run_predict_command",
        "PredictConfig",
        help="detect and segment text and box prompts in images: COCO results JSON + overlay PNGs",
        description=(
            "Ask every prompt on every image (files, or folders of images), together with the exemplar "
            "boxes (--box, --neg-box) if any; with boxes and no prompt, one query 'visual' finds everything "
            "like the boxes. Writes OUT/predictions.json (COCO results; category i = i-th prompt), "
            "OUT/index.json (images, categories, exemplars) and OUT/overlays/<image>.png (semantic=true: "
            "also OUT/semantic/<image>.png label maps). Keys: model, prompts, boxes, negative_boxes, device, "
            "overlays, semantic, postprocess.* (score_threshold, "
            "nms_iou_threshold, max_detections, ...)."
        ),
    )
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE_OR_DIR", help="images or folders")
    _shortcuts(parser, "model", data_key=None)
    parser.add_argument(
        "--prompt", dest="prompts", action="append", metavar="TEXT", help="text prompt, repeatable (prompts)"
    )
    for flag, dest, kind in (("--box", "boxes", "positive"), ("--neg-box", "negative_boxes", "negative")):
        parser.add_argument(
            flag,
            dest=dest,
            action="append",
            type=_pixel_box,
            metavar="X0,Y0,X1,Y1",
            help=f"{kind} exemplar box in pixels of the input image, repeatable ({dest})",
        )
    parser.add_argument(
        "--out", type=Path, default=Path("predictions"), help="output folder (default: ./predictions)"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the results of an earlier run in --out"
    )
    _overrides(parser, "PredictConfig")


def _pixel_box(text: str) -> list[float]:
    """``"x0,y0,x1,y1"`` -> four floats (the type of ``--box`` / ``--neg-box``)."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 4 or not (values[0] < values[2] and values[1] < values[3]):
        raise argparse.ArgumentTypeError(
            f"expected x0,y0,x1,y1 pixels with x0 < x1 and y0 < y1, got {text!r}"
        )
    return values


def _add_data(sub) -> None:
    data = sub.add_parser("data", help="inspect or convert a dataset, or write a synthetic one")
    data.set_defaults(show_help=data.print_help)
    actions = data.add_subparsers(dest="action", metavar="ACTION")
    inspect = _command(
        actions,
        "inspect",
        "sam3tune.data.command:run_inspect_command",
        "DataConfig",
        help="show what the loader makes of a dataset: counts, queries, every problem",
        description=(
            "PATH is a Roboflow export root, one split folder, a COCO JSON file or a YOLO dataset root "
            "(data.yaml, or images/ + labels/); the DataConfig keys that "
            "change what is read (negatives, max_objects_per_query, prompts, keep_unused_categories) are "
            "key=value overrides. Exit status 1 when a split cannot be used."
        ),
    )
    inspect.add_argument("path", type=Path, help="dataset root, split folder or COCO JSON file")
    inspect.add_argument(
        "--json", dest="as_json", action="store_true", help="print one JSON document (schema: docs/data.md)"
    )
    inspect.add_argument("--images", type=Path, help="image folder of a COCO JSON file")
    _overrides(inspect, "DataConfig")

    convert = actions.add_parser(
        "convert",
        help="write a dataset (YOLO folders, Hugging Face datasets, COCO) as a Roboflow-style COCO export",
        description="Read PATH as training would (a YOLO dataset root, a Hugging Face dataset: hf:ORG/NAME, "
        "a save_to_disk or parquet folder, a Roboflow export, a split folder or a COCO JSON file) and write "
        "OUT/<split>/_annotations.coco.json with the images beside it.",
    )
    convert.add_argument("path", type=Path, help="dataset root, split folder or COCO JSON file")
    convert.add_argument("--to", choices=["coco"], required=True, help="output format")
    convert.add_argument("--out", type=Path, required=True, help="output folder (new or empty)")
    convert.add_argument("--images", type=Path, help="image folder of a COCO JSON file")
    convert.add_argument(
        "--bbox-format",
        choices=["xywh", "xyxy"],
        default="xywh",
        help="box format of a Hugging Face dataset's objects.bbox (pixels; default xywh)",
    )
    convert.set_defaults(handler="sam3tune.data.command:run_convert_command")

    synth = _command(
        actions,
        "synth",
        "sam3tune.data.command:run_synth_command",
        "SynthConfig",
        help="write a synthetic dataset of coloured shapes (Roboflow layout)",
        description=(
            "Coloured shapes on textured backgrounds with multi-word prompts ('red circle', ...) and polygon "
            "masks, in OUT/train, OUT/valid, OUT/test. Keys: image_size=[W,H], categories (a preset: basic, "
            "colours, shapes, binding), seed, splits, ... (SynthConfig)."
        ),
    )
    synth.add_argument("out", type=Path, help="output folder")
    synth.add_argument(
        "--images", type=int, metavar="N", help="N training images, N/4 (>= 1) valid and test (splits)"
    )
    synth.add_argument(
        "--semantic", action="store_true", help="write label maps + semantic.yaml instead (docs/semantic.md)"
    )
    _overrides(synth, "SynthConfig")


def _add_demo(sub) -> None:
    parser = _command(
        sub,
        "demo",
        "sam3tune.demo.command:run_demo_command",
        "DemoSettings",
        help="CPU demo: fine-tune a small pretrained SAM 3 on unseen shapes, zero-shot vs tuned",
        description=(
            "Fine-tune the small SAM 3 shipped with sam3tune (pretrained on five shapes) on three shapes "
            "whose words it has never seen, with the real pipeline (synthetic data -> train -> eval -> "
            "predict), and print held-out box/mask AP, cgF1 and false-fire rate before and after, with the "
            "paths of the report, loss curve and overlays. No GPU, no download; a few minutes on 2 CPU "
            "cores. Keys: steps, train_images, heldout_images, overlays, seed, base, finetune.* (TrainConfig "
            "values of the fine-tune, e.g. finetune.optim.lr_transformer=1e-4). See docs/demo.md."
        ),
    )
    parser.add_argument("--out", type=Path, help="output folder, new or empty (out; default sam3tune-demo)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    _overrides(parser, "DemoSettings")


def _add_export(sub) -> None:
    parser = _command(
        sub,
        "export",
        "sam3tune.ship.command:run_export_command",
        "ExportConfig",
        help="ship a model: ONNX graphs for onnxruntime, or a Hugging Face Hub folder with a model card",
        description=(
            "--format onnx MODEL OUT: three ONNX graphs (image encoder, text encoder, decoder) of a merged "
            "model (e.g. RUN_DIR/model), checked against torch in onnxruntime; run them with sam3tune "
            "predict --model OUT. --format hub RUN_DIR OUT: a Hugging Face model repository folder (weights, "
            "tokenizer, processor config, README.md model card with the evaluation against zero-shot); "
            "--push REPO_ID uploads it. Keys: format, onnx.opset, onnx.exporter (dynamo/torchscript), "
            "onnx.check, hub.weights (auto/merged/adapters), hub.private, hub.push, hub.eval_report "
            "(ExportConfig, docs/ship.md)."
        ),
    )
    parser.add_argument("source", metavar="MODEL_OR_RUN", help="onnx: a model spec; hub: a run directory")
    parser.add_argument("out", type=Path, metavar="OUT", help="output folder (replaced)")
    parser.add_argument("--format", dest="fmt", choices=("onnx", "hub"), help="onnx or hub (sets format)")
    parser.add_argument("--push", metavar="REPO_ID", help="hub: upload to this model repository (hub.push)")
    parser.add_argument(
        "--eval", dest="eval_report", type=Path, metavar="EVAL_JSON", help="hub: eval.json (hub.eval_report)"
    )
    _overrides(parser, "ExportConfig")


def _add_suite(sub) -> None:
    parser = _command(
        sub,
        "suite",
        "sam3tune.suite.command:run_suite_command",
        "SuiteConfig",
        help="does fine-tuning help? zero-shot vs K-shot fine-tuned over datasets and seeds, one table",
        description=(
            "For each dataset of the suite file: evaluate the base model (zero-shot), then for each seed "
            "fine-tune on that seed's K-shot sample and evaluate the tuned model, as ordinary run folders in "
            "OUT/<dataset>/; then print the mean and spread over seeds per dataset and over the suite, "
            "beside published figures (reference: odinw13, rf100vl). Running it again continues a stopped "
            "suite. Keys: datasets, datasets_under, seeds, shots, presampled, shots_rule, base_config, "
            "base_overrides, eval.*, metric, reference, output_dir, device (SuiteConfig, docs/suite.md)."
        ),
    )
    parser.add_argument("--out", type=Path, help="output folder (sets output_dir)")
    _overrides(parser, "SuiteConfig")


# One entry per sub-command, in the order `sam3tune --help` lists them.
def _add_import_checkpoint(sub) -> None:
    parser = sub.add_parser(
        "import-checkpoint",
        help="convert a checkpoint of Meta's SAM 3 code (sam3.pt, trainer) to a Hugging Face folder",
        description="Convert a state dict written by Meta's sam3 builder or trainer (sam3.pt with "
        "detector./tracker. keys, a trainer checkpoint's 'model', DDP module. prefixes; .pt loaded "
        "weights-only, or .safetensors) into a save_pretrained folder that Sam3Model.from_pretrained and "
        "sam3tune --model load. Every weight is accounted for. See docs/model.md.",
    )
    parser.add_argument("checkpoint", type=Path, metavar="PATH", help="Meta checkpoint file")
    parser.add_argument("out", type=Path, metavar="OUT", help="new output folder")
    parser.set_defaults(handler="sam3tune.model.command:run_import_checkpoint_command")


_COMMANDS: tuple = (
    _add_demo,
    _add_data,
    _add_train,
    _add_doctor,
    _add_eval,
    _add_suite,
    _add_predict,
    _add_import_checkpoint,
    _add_export,
)
_NOT_ARGUMENTS = ("handler", "command", "action", "show_help", "debug")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command of ``argv`` (default: ``sys.argv[1:]``) and return its exit status; a
    :class:`~sam3tune.errors.UserError` becomes one message and its kind's status (see the module
    docstring), an ``OSError`` that escaped its caller the same with the file it names."""
    args = vars(build_parser().parse_args(argv))
    handler = args.get("handler")
    if handler is None:  # `sam3tune` or `sam3tune data` alone
        args["show_help"]()
        return EXIT_BAD_INPUT
    name = " ".join(args[k] for k in ("command", "action") if args.get(k))
    debug = args["debug"] or os.environ.get("SAM3TUNE_DEBUG", "") not in ("", "0")
    module, function = handler.split(":")
    try:
        run = getattr(importlib.import_module(module), function)
        return int(run(**{k: v for k, v in args.items() if k not in _NOT_ARGUMENTS}) or 0)
    except UserError as err:
        return _refuse(name, str(err), err.exit_status, debug)
    except OSError as err:  # a path problem no caller named: the system's file name and reason
        return _refuse(name, describe_os_error(err, err.filename or "a file", "use"), EXIT_BAD_INPUT, debug)
    except KeyboardInterrupt:
        return _refuse(name, "interrupted", EXIT_INTERRUPTED, debug)


def _refuse(command: str, message: str, status: int, debug: bool) -> int:
    """Print ``sam3tune COMMAND: message`` (after the traceback when ``debug``) and return ``status``."""
    if debug:
        traceback.print_exc()
    print(f"sam3tune {command}: {message}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
