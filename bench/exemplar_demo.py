"""The CPU demo with exemplar (box-prompt) training: does fine-tuning teach "find every one like this"?

The demo's task (``sam3tune demo``: stars, hearts and moons, words the shipped base never saw) is written
by the real pipeline, the shipped base is fine-tuned with the demo recipe plus exemplar queries (a
positive query becomes "visual" + one of its own boxes with ``--probability``), and the base (zero-shot)
and the tuned model are evaluated on the held-out split with text prompts and with the exemplar protocol
(one box of each (image, category); ``docs/eval.md``). Prints, zero-shot next to tuned: text-prompt box
AP50, exemplar box AP50 with the exemplar object kept, and with it excluded ("others": other objects of
the same shape, usually of another colour).

    python bench/exemplar_demo.py [--out DIR] [--steps 600] [--probability 0.5] [--threads N] [key=value ...]
    python bench/exemplar_demo.py --out DIR --evaluate-only   # evaluate DIR/run/model of an earlier run again

Exits 1 when tuned exemplar AP50 (others) is not above zero-shot.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from pathlib import Path

import torch

from sam3tune.data import DataConfig
from sam3tune.data.synth import generate
from sam3tune.demo.base import base_model_dir
from sam3tune.demo.recipe import finetune_config
from sam3tune.demo.settings import DemoSettings
from sam3tune.demo.tasks import NEW_SHAPES, finetune_task
from sam3tune.eval.api import evaluate_model
from sam3tune.eval.config import EvalConfig, ExemplarProtocolConfig
from sam3tune.eval.evaluate import EvalMetrics
from sam3tune.train.recipe import train

ROWS = (
    ("bbox_AP50", "text prompts: box AP50"),
    ("exemplar_bbox_AP50", "exemplar box: box AP50 (all objects)"),
    ("exemplar_others_bbox_AP50", "exemplar box: box AP50 (others only)"),
    ("segm_AP50", "text prompts: mask AP50"),
    ("exemplar_others_segm_AP50", "exemplar box: mask AP50 (others only)"),
)


def main() -> int:
    defaults = DemoSettings()
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("sam3tune-exemplar-demo"))
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--train-images", type=int, default=defaults.train_images)
    parser.add_argument("--heldout-images", type=int, default=defaults.heldout_images)
    parser.add_argument("--probability", type=float, default=0.5, help="data.exemplars.probability")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="task seed")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--repeats",
        action="store_true",
        help="2-3 objects and 1-2 kinds (colour + shape) per image, so most images hold several objects "
        "of a prompt (the demo task has few: its 'others' AP rests on a handful of objects)",
    )
    parser.add_argument(
        "--evaluate-only", action="store_true", help="evaluate OUT/run/model (an earlier run) on OUT/data"
    )
    parser.add_argument("overrides", nargs="*", help="extra TrainConfig key=value for the fine-tune")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    data, base, tuned_model = args.out / "data", base_model_dir(), args.out / "run" / "model"
    if args.evaluate_only:
        if not tuned_model.is_dir() or not (data / "test").is_dir():
            parser.error(f"--evaluate-only needs {tuned_model} and {data / 'test'} from an earlier run")
    else:
        if args.out.exists() and any(args.out.iterdir()):
            parser.error(f"{args.out} exists and is not empty")
        task = finetune_task(args.train_images, args.heldout_images, seed=args.seed)
        if args.repeats:
            task = dataclasses.replace(task, objects_per_image=(2, 3), categories_per_image=(1, 2))
        generate(task, data, progress=False)
        extra = [f"data.exemplars.probability={args.probability}", *args.overrides]
        result = train(finetune_config(base, data, args.out, args.steps, extra))
        if result.status != "completed":
            print(f"fine-tuning stopped after {result.steps} steps", file=sys.stderr)
            return 130
    trained = time.perf_counter() - started
    tuned, zero_shot, _ = evaluate_model(
        str(tuned_model),
        DataConfig(root=data, val="test"),
        args.out / "eval",
        EvalConfig(batch_size=8, num_workers=0, exemplars=ExemplarProtocolConfig(enabled=True)),
        baseline=str(base),
        device="cpu",
        progress=False,
    )
    print(table(zero_shot, tuned))
    print(
        f"\n{args.heldout_images} held-out images; {tuned.exemplar.queries} exemplar queries; "
        f"{'(evaluated only) ' if args.evaluate_only else ''}{args.steps} steps on {args.train_images} "
        f"images with exemplar probability {args.probability}; {torch.get_num_threads()} thread(s); "
        f"fine-tuning {trained / 60:.1f} min, "
        f"total {(time.perf_counter() - started) / 60:.1f} min; report: {args.out / 'eval' / 'eval.md'}"
    )
    before = zero_shot.summary()["exemplar_others_bbox_AP50"] or 0.0
    after = tuned.summary()["exemplar_others_bbox_AP50"] or 0.0
    return 0 if after > before else 1


def table(zero_shot: EvalMetrics, tuned: EvalMetrics) -> str:
    """Zero-shot next to tuned (percent): the headline rows, then the others-only AP50 per prompt."""
    before, after = zero_shot.summary(), tuned.summary()
    rows = [(label, before.get(key), after.get(key)) for key, label in ROWS]
    for prompt in NEW_SHAPES:
        per = [m.exemplar.others["bbox"].per_category.get(prompt, {}).get("AP50") for m in (zero_shot, tuned)]
        rows.append((f'exemplar box AP50 (others) "{prompt}"', *per))
    width = max(len(label) for label, _, _ in rows)
    lines = [f"{'held-out (percent)':<{width}}  zero-shot      tuned", "-" * (width + 22)]
    for label, old, new in rows:
        lines.append(f"{label:<{width}}  {_pct(old):>9}  {_pct(new):>9}")
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


if __name__ == "__main__":
    sys.exit(main())
