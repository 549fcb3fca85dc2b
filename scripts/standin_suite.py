"""The stand-in benchmark suite on the CPU: the paper's few-shot protocol (zero-shot vs 10-shot fine-tuned,
seeds 300, 30, 3) with the shipped demo base model on three synthetic datasets of concepts it has never
seen ("star", "heart", "moon", each with seen shapes as distractors), through `sam3tune suite`.

    python scripts/standin_suite.py --out runs/standin-suite            # run, or continue a stopped run
    python scripts/standin_suite.py --out runs/standin-suite --steps 150 # longer, stronger

The datasets are written once (OUT/data/<concept>: 100 training images to sample from, 50 held out);
the suite file is OUT/suite.yaml and the runs, reports and tables go to OUT/suite/ (docs/suite.md). Run
it again after a stop or a kill: finished steps are skipped, a stopped fine-tune continues from its
checkpoint. The fine-tune uses the demo's recipe for a 1.3M model on 64 px images (docs/demo.md), with
the 10 images of a sample as one batch, 40 steps (warm-up 10) by default: sized for a shared 2-core
machine, not for the best figures.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch
import yaml

from sam3tune.config import load_config
from sam3tune.data.synth import generate
from sam3tune.demo.base import base_model_dir
from sam3tune.demo.recipe import FINETUNE
from sam3tune.demo.tasks import finetune_task
from sam3tune.suite import SuiteConfig, run_suite

CONCEPTS = ("star", "heart", "moon")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/standin-suite"))
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps per fine-tune")
    parser.add_argument("--shots", type=int, default=10)
    parser.add_argument("--seeds", type=int, nargs="+", default=[300, 30, 3])
    parser.add_argument("--train-images", type=int, default=100, help="images each sample is drawn from")
    parser.add_argument("--test-images", type=int, default=50, help="held-out images per dataset")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (1: tiny ops are fastest on a busy machine)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    datasets = []
    for number, concept in enumerate(CONCEPTS):
        root = args.out / "data" / concept
        if not (root / "test" / "_annotations.coco.json").is_file():
            generate(
                finetune_task(args.train_images, args.test_images, seed=10 + number, shapes=(concept,)), root
            )
        datasets.append({"name": concept, "root": str(root)})
    base = [
        f"model.name={base_model_dir()}",
        *(o for o in FINETUNE if not o.startswith("loop.batch_size")),
        f"loop.batch_size={args.shots}",
        f"loop.epochs={args.steps}",
        f"loop.max_steps={args.steps}",
        f"schedule.warmup_steps={min(20, args.steps // 4)}",
        "loop.checkpoint_every_steps=10",  # counts every step (an epoch is one step here)
    ]
    suite = {
        "datasets": datasets,
        "seeds": args.seeds,
        "shots": args.shots,
        "base_overrides": base,
        "eval": {"batch_size": 8, "num_workers": 0},
        "device": "cpu",
        "output_dir": str(args.out / "suite"),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "suite.yaml").write_text(yaml.safe_dump(suite, sort_keys=False))
    outcome = run_suite(
        load_config(SuiteConfig, args.out / "suite.yaml"), say=lambda line: print(line, flush=True)
    )
    print(outcome.table)
    print(json.dumps(outcome.summary["suite"], indent=2))
    return 0 if outcome.status == "completed" and not outcome.failed else 1


if __name__ == "__main__":
    sys.exit(main())
