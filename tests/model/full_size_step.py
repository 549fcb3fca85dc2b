"""TEST-ONLY worker: one real optimizer step of the released SAM 3 architecture on the CPU.

    python -m tests.model.full_size_step lora|full [SPEC]   (repository root; prints one JSON line)

``sam3-random`` (840M parameters, 1008 px, CLIP tokenizer), activation checkpointing on, masks on,
1 image x 2 prompts (one with 3 objects, one negative), the recipe's optimizer step (``Trainer.train_step``:
official criterion, AdamW parameter groups, clipping). Reports the loss, the components whose trainable
parameters received a nonzero gradient and changed, step time and this process's peak RSS. Each mode runs
in its own process so that peak RSS is that mode's. Needs ~14-19 GB: run under
``flock /tmp/sam3tune-bigmem.lock`` on shared machines.
"""

from __future__ import annotations

import json
import resource
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]


def run(mode: str, spec: str = "sam3-random") -> dict:
    sys.path.insert(0, str(ROOT))
    from bench.train_step import SyntheticImages
    from sam3tune.data import collate
    from sam3tune.loss import CriterionConfig, Sam3Criterion
    from sam3tune.model import FinetuneConfig, ModelConfig, build_training_model, component_of, load_model
    from sam3tune.train.config import LoopConfig, ScheduleConfig, TrainConfig, ValidationConfig
    from sam3tune.train.distributed import DistributedContext
    from sam3tune.train.loop import Trainer, TrainingParts
    from sam3tune.train.param_groups import role_of

    started = time.perf_counter()
    bundle = load_model(spec)
    finetune = FinetuneConfig(mode=mode)
    model = build_training_model(bundle, ModelConfig(finetune=finetune, activation_checkpointing=True))
    build_s = time.perf_counter() - started
    blocks = model.num_vit_blocks
    dataset = SyntheticImages(count=1, side=bundle.image_size, prompts=2, objects=3, masks=True)
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
        loop=LoopConfig(batch_size=1, num_workers=0, device="cpu"),
        schedule=ScheduleConfig(warmup_steps=0, cooldown_steps=0),
        val=ValidationConfig(every_epochs=0),
    )
    context = DistributedContext(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))

    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    with_grad: set[str] = set()

    def note_gradient(name: str, param: torch.Tensor) -> None:
        if param.grad is not None and bool(param.grad.ne(0).any()):
            with_grad.add(component_of(name))

    for name, param in trainable.items():
        param.register_post_accumulate_grad_hook(partial(note_gradient, name))
    # a strided sample of every trainable tensor: enough to see it move, cheap next to 840M weights
    before = {n: p.detach().flatten()[:: max(1, p.numel() // 64)].clone() for n, p in trainable.items()}

    batch = collate_fn([dataset[0]])
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(config, parts, Path(run_dir), context)
        start = time.perf_counter()
        record, _ = trainer.train_step([batch])
        step_s = time.perf_counter() - start
        trainer.log.close()
    changed = {
        component_of(n)
        for n, p in trainable.items()
        if not torch.equal(before[n], p.detach().flatten()[:: max(1, p.numel() // 64)])
    }
    return {
        "mode": mode,
        "loss": record["loss"],
        "skipped": record["skipped"],
        "step_s": round(step_s, 1),
        "build_s": round(build_s, 1),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "trainable": sum(p.numel() for p in trainable.values()),
        "trainable_components": sorted({component_of(n) for n in trainable}),
        "components_with_gradient": sorted(with_grad),
        "components_changed": sorted(changed),
        "image_size": bundle.image_size,
        "loss_mask": record.get("loss_mask"),
        "loss_dice": record.get("loss_dice"),
    }


if __name__ == "__main__":
    print(json.dumps(run(*sys.argv[1:3])), flush=True)
