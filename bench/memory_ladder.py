"""The memory ladder measured: per rung, trained parameters, weights, optimizer state, the activation peak
and the estimated peak of one training step, and the step time.

    python bench/memory_ladder.py                          # CPU: full-size SAM 3, every rung (~14 GB RAM)
    python bench/memory_ladder.py --arch tiny              # CPU smoke run (what the test runs)
    python bench/memory_ladder.py --device cuda --out bench-results/memory_ladder   # one GPU, < 8 min

Setup: the released architecture (``Sam3Config()``, 840M parameters, random weights built from the config:
no download) at 1008 px, batch 1 image with 4 prompts (2 positive with 3 masked objects each, 2
negative), the official criterion with masks, bf16 autocast (on the CPU too, so that the figures are
those of a GPU run), each rung's config from :mod:`sam3tune.train.memory_ladder`. Each rung runs in its
own process: first one step watched by the doctor's meter (``probe_training_step``: weights and
gradients counted, optimizer state measured after the step, activation peak measured tensor by tensor),
then ``--steps`` plain steps of the loop (``Trainer.train_step``) timed; on CUDA also
``torch.cuda.max_memory_allocated`` over those steps (steady state) and over the watched first step.

Writes ``OUT.json`` (rows) and ``OUT.md`` (the table) when ``--out OUT`` is given.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_step import SyntheticImages, _build_bundle

from sam3tune.train.memory_ladder import LADDER


def measure_rung(args: argparse.Namespace, rung: str) -> dict:
    """One rung: the watched step, then the timed steps (runs inside a worker process)."""
    from sam3tune.data import collate
    from sam3tune.doctor.step_probe import probe_training_step
    from sam3tune.loss import CriterionConfig, Sam3Criterion
    from sam3tune.model import build_training_model
    from sam3tune.train.config import LoopConfig, ScheduleConfig, TrainConfig, ValidationConfig
    from sam3tune.train.distributed import DistributedContext, resolve_device
    from sam3tune.train.loop import Trainer, TrainingParts
    from sam3tune.train.memory_ladder import rung_config
    from sam3tune.train.param_groups import role_of

    device = resolve_device(args.device, 0)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    started = time.perf_counter()
    bundle = _build_bundle(args.arch, None, device)
    config = rung_config(
        TrainConfig(
            loop=LoopConfig(batch_size=1, num_workers=0, device=str(device), amp="bf16"),
            schedule=ScheduleConfig(warmup_steps=0, cooldown_steps=0),
            val=ValidationConfig(every_epochs=0),
        ),
        rung,
    )
    model = build_training_model(bundle, config.model, bf16_autocast=True)
    blocks = model.num_vit_blocks
    dataset = SyntheticImages(1, bundle.image_size, args.prompts, args.objects, masks=True)
    collate_fn = partial(collate, tokenize=bundle.tokenize)
    criterion = Sam3Criterion(CriterionConfig())
    parts = TrainingParts(
        model=model,
        criterion=criterion,
        train_dataset=dataset,
        collate_fn=collate_fn,
        role_of=role_of,
        num_vit_blocks=blocks,
    )
    context = DistributedContext(rank=0, local_rank=0, world_size=1, device=device)
    batch = collate_fn([dataset[0]])
    row = {"rung": rung, "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad)}
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(config, parts, Path(run_dir), context)
        build_s = time.perf_counter() - started
        watched = time.perf_counter()
        probe = probe_training_step(
            model, criterion, batch, trainer.optimizer, bf16=True, max_grad_norm=config.optim.grad_clip_norm
        )
        row["watched_step_s"] = round(time.perf_counter() - watched, 3)
        memory = probe.memory
        record = {"loss": float(probe.result["loss"])}
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        for _ in range(args.steps):
            record, _ = trainer.train_step([batch])
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            row["cuda_peak"] = int(torch.cuda.max_memory_allocated(device))
            row["cuda_first_step_peak"] = memory.cuda_peak
        if args.steps:
            row["step_s"] = round((time.perf_counter() - start) / args.steps, 3)
        trainer.log.close()
    row.update(
        weights=memory.weights,
        gradients=memory.gradients,
        optimizer=memory.optimizer_state,
        activations=memory.activations,
        optimizer_step=memory.optimizer_step,
        total=memory.total,
        build_s=round(build_s, 1),
        loss=round(record["loss"], 2),
    )
    return row


def markdown(rows: list[dict], title: str) -> str:
    cuda = any("cuda_peak" in r for r in rows)
    head = ["rung", "trainable params", "weights", "optimizer", "activation peak", "total estimate", "s/step"]
    head += ["cuda max allocated"] if cuda else []
    lines = [title, "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    note = (
        ""
        if all("step_s" in r or "skipped" in r for r in rows)
        else "\n\n* the watched step (no timed steps)"
    )
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['rung']} | skipped: {r['skipped']} |" + " |" * (len(head) - 2))
            continue
        cells = [
            r["rung"],
            f"{r['trainable'] / 1e6:.2f}M",
            _gib(r["weights"]),
            _gib(r["optimizer"]),
            _gib(r["activations"]),
            _gib(r["total"]),
            f"{r['step_s']:.2f}" if "step_s" in r else f"{r['watched_step_s']:.0f}*",
        ]
        cells += [_gib(r["cuda_peak"])] if cuda else []
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + note


def _gib(nbytes: int) -> str:
    return f"{nbytes / 2**30:.2f} GiB" if nbytes >= 2**28 else f"{nbytes / 2**20:.1f} MiB"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--arch", default="full", help="full (Sam3Config()), small or tiny")
    parser.add_argument("--rungs", default=",".join(LADDER), help="comma-separated subset of the ladder")
    parser.add_argument("--prompts", type=int, default=4, help="queries per image (half positive)")
    parser.add_argument("--objects", type=int, default=3, help="objects per positive query")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: 3 CUDA, 0 CPU)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--budget-s", type=float, default=420.0, help="start no rung after this")
    parser.add_argument("--out", type=Path, default=None, help="write OUT.json and OUT.md")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps is None:
        args.steps = 3 if args.device.startswith("cuda") else 0
    args.rungs = [r for r in args.rungs.split(",") if r]
    unknown = sorted(set(args.rungs) - set(LADDER))
    if unknown:
        parser.error(f"unknown rung(s) {unknown}; choose from {list(LADDER)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker is not None:  # one rung, in this process; its row as JSON on the last stdout line
        print(json.dumps(measure_rung(args, args.worker)))
        return 0
    t0 = time.time()
    rows: list[dict] = []
    for rung in args.rungs:
        if time.time() - t0 > args.budget_s:
            rows.append({"rung": rung, "skipped": "time budget"})
            continue
        command = [sys.executable, __file__, "--worker", rung, "--device", args.device, "--arch", args.arch]
        command += [
            "--prompts",
            str(args.prompts),
            "--objects",
            str(args.objects),
            "--steps",
            str(args.steps),
        ]
        command += ["--threads", str(args.threads)] if args.threads else []
        done = subprocess.run(command, capture_output=True, text=True, env=os.environ)
        if done.returncode != 0:
            tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
            print(f"{rung}: worker failed\n{done.stderr[-3000:]}", file=sys.stderr)
            reason = "out of memory" if "OutOfMemoryError" in done.stderr else f"failed: {tail[0][:120]}"
            rows.append({"rung": rung, "skipped": reason})
            continue
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"{rung}: done at {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    cuda = args.device.startswith("cuda") and torch.cuda.is_available()
    where = torch.cuda.get_device_name() if cuda else f"CPU, {torch.get_num_threads()} torch thread(s)"
    title = (
        f"Memory ladder: arch {args.arch}, 1 image x {args.prompts} prompts, masks on, bf16 autocast, "
        f"{where}, {time.time() - t0:.0f} s in all"
    )
    table = markdown(rows, title)
    print(table)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps({"title": title, "rows": rows}, indent=2))
        args.out.with_suffix(".md").write_text(table + "\n")
    return 0 if all("skipped" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
