"""Pretrain the base model that `sam3tune demo` fine-tunes, and ship it as sam3tune/demo/base.

    python scripts/pretrain_demo_base.py [--out runs/demo-base] [--steps 6000] [--images 12000]
                                         [--threads 1] [--export DIR | --no-export] [key=value ...]

Seeded and deterministic on one machine: writes the seen-shapes concept dataset (sam3tune.demo.tasks)
to OUT/data, trains the `demo` architecture from scratch with sam3tune.train.train() and the
sam3tune.demo.recipe.PRETRAINING overrides (plus any key=value given here) in OUT/run, then writes the
run's exported model in fp16 with pretraining.json (settings, validation results) to
sam3tune/demo/base. Run it again with the same OUT to continue an interrupted run exactly.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from pathlib import Path

import torch

from sam3tune.data.synth import generate
from sam3tune.demo.base import BASE_DIR, export_base
from sam3tune.demo.recipe import PRETRAINING, pretraining_config
from sam3tune.demo.tasks import pretraining_task
from sam3tune.model.prompt_token import RECORD_KEY
from sam3tune.train.metrics_log import read_metrics
from sam3tune.train.recipe import train


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/demo-base"), help="data and run folder")
    parser.add_argument("--steps", type=int, default=6000, help="optimizer steps (8 images each)")
    parser.add_argument("--images", type=int, default=12000, help="training images (valid: --valid-images)")
    parser.add_argument("--valid-images", type=int, default=100)
    parser.add_argument("--nonsense", type=int, default=40, help="made-up-word categories")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: best on a busy CPU)")
    parser.add_argument("--export", type=Path, default=BASE_DIR, help=f"where to write the base ({BASE_DIR})")
    parser.add_argument("--no-export", action="store_true", help="train only")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="extra TrainConfig overrides")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    data, run_dir = args.out / "data", args.out / "run"
    task = pretraining_task(args.images, args.valid_images, args.nonsense, seed=args.seed)
    resume = run_dir if (run_dir / "checkpoints" / "last").exists() else None
    if resume is None:
        generate(task, data)  # a pure function of the task: rewriting it is harmless
    config = pretraining_config(data, args.out, args.steps, args.overrides)
    started = time.perf_counter()
    result = train(config, resume=resume)
    minutes = (time.perf_counter() - started) / 60
    records = read_metrics(run_dir / "metrics.jsonl")
    validations = [r for r in records if r.get("kind") == "val"]
    step_minutes = sum(r["seconds"] for r in records if r.get("kind") == "train") / 60
    for record in validations:
        print(
            f"step {record['step']}: seen-concept bbox AP50 {record.get('bbox_AP50', float('nan')):.3f}, "
            f"segm AP50 {record.get('segm_AP50', float('nan')):.3f}, "
            f"false-fire rate {record.get('false_fire_rate', float('nan')):.3f}"
        )
    if result.status != "completed":
        print(f"stopped after {result.steps} steps; run the same command again to continue")
        return 130
    if not args.no_export:
        provenance = {
            "script": "scripts/pretrain_demo_base.py",
            "arguments": {k: str(v) for k, v in vars(args).items()},
            "recipe_overrides": list(PRETRAINING),
            "task": {
                "train_images": args.images,
                "valid_images": args.valid_images,
                "nonsense": args.nonsense,
                "seed": args.seed,
                "categories": task.category_names(),
            },
            "steps": result.steps,
            # the prompt-token mode the base was pretrained (and so runs) in: sam3tune's default, meta
            "prompt_token": _recorded_prompt_token(run_dir / "model"),
            "weights": _shipped_weights(result, validations),
            "training_step_minutes": round(step_minutes, 1),  # all segments, validation excluded
            "threads": args.threads,
            "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
            "torch": torch.__version__,
            "validation": validations,
        }
        export_base(run_dir / "model", args.export, provenance)
        size = (args.export / "model.safetensors").stat().st_size / 2**20
        print(f"base model written to {args.export} ({size:.1f} MiB fp16)")
    print(f"{result.steps} steps; {step_minutes:.1f} min of training steps, {minutes:.1f} min this segment")
    return 0


def _recorded_prompt_token(model_dir: Path) -> str:
    config = json.loads((model_dir / "config.json").read_text())
    return config[RECORD_KEY]


def _shipped_weights(result, validations: list[dict]) -> dict:
    """Which checkpoint the run's exported model holds (the recipe exports the best one, else the last):
    its step and seen-concept bbox AP50."""
    if result.best_checkpoint is None or not validations:
        return {"checkpoint": "last", "step": result.steps}
    best = max(validations, key=lambda record: record["bbox_AP50"])  # the first of equal values
    return {"checkpoint": "best", "step": best["step"], "bbox_AP50": best["bbox_AP50"]}


if __name__ == "__main__":
    sys.exit(main())
