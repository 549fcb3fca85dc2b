"""Training-step speed and peak memory of SAM 3 under the sam3tune recipe, per fine-tuning mode and batch.

    python bench/train_step.py                         # CPU: the `small` architecture (128 px)
    python bench/train_step.py --arch tiny --steps 1   # CPU smoke run (what the test runs)
    python bench/train_step.py --device cuda           # GPU: full-size SAM 3 (840M) at 1008 px

Each measured step is the loop's real optimizer step (``Trainer.train_step``: bf16 autocast on CUDA,
the official criterion with masks, AdamW with the recipe's parameter groups, clipping at 0.1) on a
synthetic batch of I images, each with ``--prompts`` queries (half of them positive, with
``--objects`` objects that have masks at the input resolution, as the official data pipeline
produces). The model is built from its config with random weights (no download): ``--arch full`` is
the released SAM 3 architecture, ``tiny`` / ``small`` are sam3tune's named small ones; ``--model PATH``
benchmarks a saved model instead. Modes: ``lora`` (adapters + heads), ``frozen`` (vision and text
encoders frozen) and ``full``. Each mode runs in its own process, batch sizes ascending, so peak
memory is that process's: ``torch.cuda.max_memory_allocated`` on CUDA, peak RSS on CPU.

Budget: the default GPU run (3 modes x batches 1-4 x 2 warm-up + 4 timed steps) is sized for about
3-4 minutes on an H200 including model builds; ``--budget-s`` stops starting new measurements when
the time is nearly spent, and the table says what was skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

MODES = ("lora", "frozen", "full")


# ----------------------------------------------------------------------------------------------- worker
def _build_bundle(arch: str, model_path: str | None, device: torch.device):
    """A ``ModelBundle`` whose model is built from its config directly on ``device``."""
    from transformers import Sam3Config, Sam3Model

    from sam3tune.model import NAMED_ARCHITECTURES, load_model
    from sam3tune.model.architectures import sam3_config
    from sam3tune.model.loading import LoadReport, ModelBundle
    from sam3tune.model.tokenizer import HashingTokenizer

    if model_path is not None:
        return load_model(model_path)
    config = Sam3Config() if arch == "full" else sam3_config(NAMED_ARCHITECTURES[arch])
    with torch.device(device):
        model = Sam3Model(config)
    text = config.text_config
    tokenizer = HashingTokenizer(text.vocab_size, text.max_position_embeddings)
    source = f"random {arch} SAM 3"
    return ModelBundle(model, tokenizer, int(config.image_size), source, LoadReport(source=source))


class SyntheticImages(torch.utils.data.Dataset):
    """``count`` random images of side ``side`` as ``sam3tune.data.Sample``s: ``prompts`` queries each,
    the first half positive with ``objects`` boxes and full-resolution masks, the rest negative."""

    def __init__(self, count: int, side: int, prompts: int, objects: int, masks: bool) -> None:
        self.count, self.side, self.prompts, self.objects, self.masks = count, side, prompts, objects, masks

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int):
        from sam3tune.data import Sample

        generator = torch.Generator().manual_seed(index)
        side = self.side
        image = torch.randint(0, 256, (3, side, side), dtype=torch.uint8, generator=generator)
        targets = []
        for query in range(self.prompts):
            n = self.objects if query < (self.prompts + 1) // 2 else 0
            centres = 0.3 + 0.4 * torch.rand(n, 2, generator=generator)
            sizes = 0.1 + 0.2 * torch.rand(n, 2, generator=generator)
            target = {"boxes": torch.cat([centres, sizes], 1)}
            if self.masks:
                masks = torch.zeros(n, side, side, dtype=torch.bool)
                for i, ((cx, cy), (w, h)) in enumerate(zip(centres.tolist(), sizes.tolist(), strict=True)):
                    x0, x1 = int((cx - w / 2) * side), int((cx + w / 2) * side)
                    y0, y1 = int((cy - h / 2) * side), int((cy + h / 2) * side)
                    masks[i, y0:y1, x0:x1] = True
                target.update(masks=masks, is_valid_mask=torch.ones(n, dtype=torch.bool))
            targets.append(target)
        return Sample(
            image=image,
            image_id=index,
            orig_size=(side, side),
            category_ids=list(range(1, self.prompts + 1)),
            prompts=[f"object {q}" for q in range(self.prompts)],
            targets=targets,
        )


def _peak_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_mode(args: argparse.Namespace, mode: str) -> list[dict]:
    """Measure fine-tuning ``mode`` over the batch sizes (runs inside a worker process)."""
    from functools import partial

    from sam3tune.data import collate
    from sam3tune.loss import CriterionConfig, Sam3Criterion
    from sam3tune.model import FinetuneConfig, ModelConfig, build_training_model
    from sam3tune.train.config import LoopConfig, ScheduleConfig, TrainConfig, ValidationConfig
    from sam3tune.train.distributed import DistributedContext, resolve_device
    from sam3tune.train.loop import Trainer, TrainingParts
    from sam3tune.train.param_groups import role_of

    device = resolve_device(args.device, 0)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    started = time.perf_counter()
    deadline = started + args.budget_s
    bundle = _build_bundle(args.arch, args.model, device)
    finetune = {
        "lora": FinetuneConfig(mode="lora"),
        "frozen": FinetuneConfig(mode="full", freeze=["vision", "text"]),
        "full": FinetuneConfig(mode="full"),
    }[mode]
    model = build_training_model(
        bundle, ModelConfig(finetune=finetune, activation_checkpointing=args.activation_checkpointing)
    )
    build_s = time.perf_counter() - started
    blocks = int(model.core.config.vision_config.backbone_config.num_hidden_layers)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    dataset = SyntheticImages(
        max(args.batches), bundle.image_size, args.prompts, args.objects, not args.no_masks
    )
    collate_fn = partial(collate, tokenize=bundle.tokenize)
    parts = TrainingParts(
        model=model,
        criterion=Sam3Criterion(CriterionConfig()),
        train_dataset=dataset,
        collate_fn=collate_fn,
        role_of=role_of,
        num_vit_blocks=blocks,
    )
    config = TrainConfig(
        loop=LoopConfig(batch_size=1, num_workers=0, device=str(device)),
        schedule=ScheduleConfig(warmup_steps=0, cooldown_steps=0),
        val=ValidationConfig(every_epochs=0),
    )
    context = DistributedContext(rank=0, local_rank=0, world_size=1, device=device)
    rows = []
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(config, parts, Path(run_dir), context)
        for images in sorted(args.batches):
            row = {"mode": mode, "images": images, "queries": images * args.prompts}
            row.update(trainable=trainable, build_s=round(build_s, 1))
            if time.perf_counter() > deadline:
                rows.append({**row, "skipped": "time budget"})
                continue
            batch = collate_fn([dataset[i] for i in range(images)])
            try:
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats(device)
                for _ in range(args.warmup):
                    trainer.train_step([batch])
                _sync(device)
                start = time.perf_counter()
                for _ in range(args.steps):
                    record, _ = trainer.train_step([batch])
                _sync(device)
                seconds = (time.perf_counter() - start) / args.steps
            except torch.cuda.OutOfMemoryError:
                trainer.optimizer.zero_grad(set_to_none=True)
                rows.append({**row, "skipped": "out of memory"})
                continue
            rows.append(
                {
                    **row,
                    "step_s": round(seconds, 4),
                    "images_per_s": round(images / seconds, 3),
                    "peak_gib": round(_peak_bytes(device) / 2**30, 3),
                    "loss": round(record["loss"], 2),
                }
            )
        trainer.log.close()
    return rows


# ------------------------------------------------------------------------------------------ orchestrator
def _table(rows: list[dict], device: str) -> str:
    memory = "peak GPU GiB" if device.startswith("cuda") else "peak RSS GiB"
    lines = [
        f"{'mode':<7}{'images':>7}{'queries':>8}{'step s':>9}{'images/s':>10}{memory:>14}{'trainable':>13}"
    ]
    for r in rows:
        if "skipped" in r:
            lines.append(f"{r['mode']:<7}{r['images']:>7}{r['queries']:>8}   skipped: {r['skipped']}")
            continue
        lines.append(
            f"{r['mode']:<7}{r['images']:>7}{r['queries']:>8}{r['step_s']:>9.3f}{r['images_per_s']:>10.2f}"
            f"{r['peak_gib']:>14.2f}{r['trainable']:>13,}"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument(
        "--arch", default=None, help="full, small or tiny (default: full on CUDA, small on CPU)"
    )
    parser.add_argument("--model", default=None, help="benchmark a saved model directory instead")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of lora,frozen,full")
    parser.add_argument(
        "--batches", default=None, help="images per step, e.g. 1,2,3,4 (default: 1-4 CUDA, 1-2 CPU)"
    )
    parser.add_argument("--prompts", type=int, default=4, help="queries per image (half positive)")
    parser.add_argument("--objects", type=int, default=3, help="objects per positive query")
    parser.add_argument("--no-masks", action="store_true", help="box targets only (no mask loss)")
    parser.add_argument("--activation-checkpointing", action="store_true")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per measurement")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--budget-s", type=float, default=280.0, help="start no measurement after this")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    cuda = args.device.startswith("cuda")
    args.arch = args.arch or ("full" if cuda else "small")
    args.batches = [int(b) for b in (args.batches or ("1,2,3,4" if cuda else "1,2")).split(",")]
    args.modes = [m for m in args.modes.split(",") if m]
    unknown = sorted(set(args.modes) - set(MODES))
    if unknown:
        parser.error(f"unknown mode(s) {unknown}; choose from {list(MODES)}")
    return args


def _worker_args(args: argparse.Namespace) -> list[str]:
    """The options of ``args`` that a worker process needs, as command-line arguments."""
    out = ["--device", args.device, "--arch", args.arch, "--batches", ",".join(map(str, args.batches))]
    out += ["--prompts", str(args.prompts), "--objects", str(args.objects)]
    out += ["--warmup", str(args.warmup), "--steps", str(args.steps)]
    out += ["--model", args.model] if args.model else []
    out += ["--threads", str(args.threads)] if args.threads else []
    out += ["--no-masks"] if args.no_masks else []
    out += ["--activation-checkpointing"] if args.activation_checkpointing else []
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cuda = args.device.startswith("cuda")
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.worker is not None:  # one mode, in this process; rows as JSON on the last stdout line
        print(json.dumps(run_mode(args, args.worker)))
        return 0

    t0 = time.time()
    rows: list[dict] = []
    for mode in args.modes:
        remaining = args.budget_s - (time.time() - t0)
        if remaining <= 0:
            rows += [{"mode": mode, "images": b, "queries": b * args.prompts, "skipped": "time budget"}
                     for b in args.batches]  # fmt: skip
            continue
        command = [sys.executable, __file__, "--worker", mode, *_worker_args(args)]
        command += ["--budget-s", str(remaining)]
        done = subprocess.run(command, capture_output=True, text=True, env=os.environ)
        if done.returncode != 0:
            print(done.stderr[-4000:], file=sys.stderr)
            rows += [{"mode": mode, "images": b, "queries": b * args.prompts, "skipped": "worker failed"}
                     for b in args.batches]  # fmt: skip
            continue
        rows += json.loads(done.stdout.strip().splitlines()[-1])
    where = (
        torch.cuda.get_device_name()
        if cuda and torch.cuda.is_available()
        else f"CPU, {torch.get_num_threads()} torch thread(s)"
    )
    print(f"SAM 3 training step: arch {args.model or args.arch}, {args.prompts} prompts/image, "
          f"masks {'off' if args.no_masks else 'on'}, {where}, {time.time() - t0:.0f} s in all")  # fmt: skip
    print(_table(rows, args.device))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0 if all("skipped" not in r or r["skipped"] == "time budget" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
