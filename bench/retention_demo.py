"""Fine-tune without forgetting, on the CPU demo: what each remedy costs the tuned prompts and keeps of the
base's own concepts, every figure side by side from one run of this script.

The demo's task (``sam3tune demo``: stars, hearts and moons, words the shipped base never saw; the base
knows circles, squares, triangles, diamonds and hexagons) is written once; then the shipped base is
fine-tuned once per variant with the demo recipe plus the variant's ``retention.*`` keys, and every tuned
model is evaluated on the same 200 held-out images next to the base (zero-shot):

- tuned prompts: box / mask AP50, false-fire rate of their negatives;
- the base's five concepts: retention box AP (against the base's own answers, 100 = unchanged), true box
  AP50 on the held-out images labelled for them (the same pixels), their false-fire rate;
- the tuned prompts' most frequent confusions.

Variants (``--variants``, in order; each ``name`` or ``name:value``):

- ``today``: the demo recipe as it is (no remedy);
- ``distill:W``: ``retention.distill.weight=W``;
- ``replay``: ``retention.replay.enabled=true``;
- ``confusable:R``: ``retention.confusable.repeats=R`` with the pairs of today's confusion table
  (``retention.confusable.from_eval``: ``today`` must run first) and those the base shows;
- ``replay+distill:W``: both.

    python bench/retention_demo.py --out DIR [--steps 600] [--threads N] [--variants today distill:1 ...]
    python bench/retention_demo.py --out DIR --jobs 2 ...   # variants in 2 processes at a time

Writes ``DIR/retention_demo.json`` and ``.md`` (the table), and per variant ``DIR/<variant>/run`` and
``DIR/<variant>/eval``; a variant whose ``eval/eval.json`` exists is read back, not trained again
(``--fresh`` retrains). The machine it runs on is printed with the table.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from sam3tune.data import DataConfig
from sam3tune.data.synth import generate
from sam3tune.demo.base import base_model_dir
from sam3tune.demo.recipe import finetune_config
from sam3tune.demo.runner import demo_retention
from sam3tune.demo.settings import DemoSettings
from sam3tune.demo.tasks import finetune_task, retention_task
from sam3tune.eval.api import evaluate_model
from sam3tune.eval.config import EvalConfig
from sam3tune.run_dir import RunDir
from sam3tune.train.recipe import train

ROWS = (
    ("bbox_AP50", "tuned prompts: box AP50"),
    ("segm_AP50", "tuned prompts: mask AP50"),
    ("false_fire_rate", "tuned prompts: false-fire rate"),
    ("retention_bbox_AP", "base concepts: retention box AP"),
    ("retention_bbox_AP50", "base concepts: retention box AP50"),
    ("retention_true_bbox_AP50", "base concepts: true box AP50"),
    ("retention_true_bbox_AP", "base concepts: true box AP"),
    ("retention_false_fire_rate", "base concepts: false-fire rate"),
)


def overrides(variant: str, out: Path) -> list[str]:
    """The ``retention.*`` keys of a variant (see the module docstring)."""
    name, _, value = variant.partition(":")
    if name == "today":
        return []
    if name == "distill":
        return [f"retention.distill.weight={float(value or 1)}"]
    if name == "replay":
        return ["retention.replay.enabled=true"]
    if name == "replay+distill":
        return ["retention.replay.enabled=true", f"retention.distill.weight={float(value or 1)}"]
    if name == "confusable":
        today = out / "today" / "eval" / "eval.json"
        if not today.is_file():
            raise SystemExit(f"variant {variant}: run 'today' first (its confusion table: {today})")
        return [
            f"retention.confusable.repeats={int(value or 2)}",
            f"retention.confusable.from_eval={today}",
            "retention.confusable.from_start=true",
        ]
    raise SystemExit(f"unknown variant {variant!r}")


def run_variant(variant: str, args: argparse.Namespace, data: Path, base: Path) -> dict:
    """Train (unless evaluated already) and evaluate one variant; its summaries, confusions and seconds."""
    folder = args.out / variant.replace(":", "-")
    report = folder / "eval" / "eval.json"
    seconds = None
    if args.fresh or not report.is_file():
        extra = [*overrides(variant, args.out), *args.overrides]
        started = time.perf_counter()
        config = finetune_config(base, data, folder, args.steps, extra)
        result = train(config)
        seconds = time.perf_counter() - started
        evaluate_model(
            str(RunDir(result.run_dir).model_dir),
            DataConfig(root=data, val="test"),
            folder / "eval",
            EvalConfig(batch_size=8, num_workers=0),
            baseline=str(base),
            device="cpu",
            progress=False,
            retention=demo_retention(args.out),
        )
        (folder / "seconds.json").write_text(json.dumps({"fine-tune": seconds}))
    elif (folder / "seconds.json").is_file():
        seconds = json.loads((folder / "seconds.json").read_text())["fine-tune"]
    loaded = json.loads(report.read_text())
    return {
        "variant": variant,
        "overrides": overrides(variant, args.out),
        "tuned": loaded["model"]["summary"],
        "zero_shot": loaded["baseline"]["summary"],
        "confusion": loaded["model"]["metrics"]["confusion"]["counts"],
        "verdict": (loaded.get("verdict") or {}).get("line"),
        "seconds": seconds,
    }


def table(runs: list[dict]) -> str:
    """Markdown: a row per figure, zero-shot then each variant (percent)."""
    header = ["held-out (percent)", "zero-shot", *(r["variant"] for r in runs)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" + "---:|" * (len(header) - 1)]
    for key, label in ROWS:
        values = [runs[0]["zero_shot"].get(key), *(r["tuned"].get(key) for r in runs)]
        lines.append(
            "| " + " | ".join([label, *("-" if v is None else f"{100 * v:.1f}" for v in values)]) + " |"
        )
    times = ["-", *("-" if r["seconds"] is None else f"{r['seconds'] / 60:.1f}" for r in runs)]
    lines.append("| " + " | ".join(["fine-tuning minutes", *times]) + " |")
    return "\n".join(lines)


def confusions(counts: dict[str, dict[str, int]], shown: int = 5) -> str:
    """The most frequent ``prompt -> other: n`` pairs of a confusion table."""
    pairs = sorted(((p, c, n) for p, row in counts.items() for c, n in row.items()), key=lambda x: -x[2])
    return "; ".join(f"{p} -> {c}: {n}" for p, c, n in pairs[:shown]) or "none"


def _train_in_processes(args: argparse.Namespace) -> None:
    """Train the variants not yet evaluated in up to ``args.jobs`` processes at a time (``confusable``
    variants after ``today``, whose confusion table they read)."""
    pending = [
        v
        for v in args.variants
        if args.fresh or not (args.out / v.replace(":", "-") / "eval" / "eval.json").is_file()
    ]
    waves = [
        [v for v in pending if not v.startswith("confusable")],
        [v for v in pending if v.startswith("confusable")],
    ]
    common = [
        f"--out={args.out}", f"--steps={args.steps}", f"--train-images={args.train_images}",
        f"--heldout-images={args.heldout_images}", f"--seed={args.seed}",
        *(["--fresh"] if args.fresh else []), *([f"--threads={args.threads}"] if args.threads else []),
    ]  # fmt: skip
    for wave in waves:
        running: list[subprocess.Popen] = []
        for variant in wave:
            while len(running) >= args.jobs:
                running.pop(0).wait()
            command = [sys.executable, __file__, *common, "--variants", variant, "--", *args.overrides]
            running.append(subprocess.Popen(command, stdout=subprocess.DEVNULL))
        for process in running:
            process.wait()


def main() -> int:
    defaults = DemoSettings()
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("sam3tune-retention-demo"))
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--train-images", type=int, default=defaults.train_images)
    parser.add_argument("--heldout-images", type=int, default=defaults.heldout_images)
    parser.add_argument("--seed", type=int, default=defaults.seed, help="task seed")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--variants", nargs="+", default=["today", "distill:1", "replay", "confusable:2"])
    parser.add_argument("--fresh", action="store_true", help="train every variant again")
    parser.add_argument("--jobs", type=int, default=1, help="variants trained at once, one process each")
    parser.add_argument("overrides", nargs="*", help="TrainConfig key=value for every variant")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    base = base_model_dir()
    data = args.out / "data"
    if not (data / "test").is_dir():
        generate(finetune_task(args.train_images, args.heldout_images, seed=args.seed), data, progress=False)
        generate(retention_task(args.heldout_images, seed=args.seed), args.out / "data-base-concepts", False)
    if args.jobs > 1:
        _train_in_processes(args)
        args.fresh = False  # trained just now: read back
    runs = []
    for variant in args.variants:
        runs.append(run_variant(variant, args, data, base))
        print(f"{variant}: done", flush=True)
    machine = (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU(s) (shared), "
        f"{torch.get_num_threads()} torch thread(s), torch {torch.__version__}"
    )
    text = "\n".join(
        [
            f"{args.heldout_images} held-out images, {args.steps} fine-tuning steps on {args.train_images} "
            f"images per variant; {machine}",
            "",
            table(runs),
            "",
            "Most frequent confusions of the tuned prompts (detections on another category's object):",
            *(f"- {r['variant']}: {confusions(r['confusion'])}" for r in runs),
        ]
    )
    print(text)
    (args.out / "retention_demo.md").write_text(text + "\n")
    (args.out / "retention_demo.json").write_text(json.dumps({"machine": machine, "runs": runs}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
