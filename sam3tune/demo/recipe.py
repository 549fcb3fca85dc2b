"""The demo's two training runs as :class:`~sam3tune.train.config.TrainConfig` overrides of the official
recipe (``key=value`` strings, the form ``sam3tune train`` takes).

Both runs differ from the official fine-tuning recipe where a 1.3M-parameter model on 64 px images needs
it (each measured, docs/demo.md): one learning rate of 3e-4 for every component without ViT layer decay
(the official 8e-5 / 2.5e-5 / 5e-6 are sized for a pretrained 840M model; new words need the text
encoder to move), a constant rate after warm-up (the official inverse square root with timescale 20
has fallen to a quarter after 300 steps), no DETR dropout, and training images on the evaluation
transform (the official random resize + pad shrinks 20-40 px objects on a 64 px canvas). The loss,
clipping at 0.1, AdamW and weight decay are the recipe's.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

from sam3tune.config import load_config
from sam3tune.data.layout import ROBOFLOW_ANNOTATIONS
from sam3tune.demo.tasks import SEEN_SHAPES
from sam3tune.train.config import TrainConfig

_SMALL_MODEL = [
    "model.detr_dropout=0.0",
    "loop.augment=false",
    "loop.num_workers=0",  # 64 px images decode in microseconds; workers only add processes
    "optim.lr_transformer=3e-4",
    "optim.lr_vision=3e-4",
    "optim.lr_text=3e-4",
    "optim.vision_layer_decay=1.0",
    "schedule.timescale=1000000000",  # no inverse-square-root decay: constant after warm-up
]

#: Pretraining the shipped base from scratch (``scripts/pretrain_demo_base.py``): 8 images per step
#: with every positive and 4 sampled negatives each (~8 queries per image), the made-up-word
#: categories queried as negatives, validation (seen concepts) every epoch.
PRETRAINING: tuple[str, ...] = (
    "model.name=demo",
    *_SMALL_MODEL,
    "data.keep_unused_categories=true",
    "data.negatives=4",
    "loop.batch_size=8",
    "loop.seed=0",
    "schedule.warmup_steps=100",
    "schedule.cooldown_steps=600",
    "val.every_epochs=1",
    "val.best_metric=bbox_AP50",
    "val.eval.batch_size=8",
    "val.eval.num_workers=0",
    "loop.checkpoint_every_steps=500",
)

#: Fine-tuning the base on the new shapes (``sam3tune demo``): 16 images per step, each with all 3
#: prompts; no validation during training (the held-out split is only evaluated before and after). The
#: base's own concepts are the retention prompts: the remedies (``retention.distill`` / ``.replay`` /
#: ``.confusable``, off here) keep them when switched on.
FINETUNE: tuple[str, ...] = (
    *_SMALL_MODEL,
    "loop.batch_size=16",
    "loop.seed=0",
    "schedule.warmup_steps=20",
    "val.every_epochs=0",
    "loop.checkpoint_every_epochs=0",
    f"retention.prompts=[{', '.join(SEEN_SHAPES)}]",
)


def pretraining_config(data: Path, out: Path, steps: int, extra: Sequence[str] = ()) -> TrainConfig:
    """The pretraining run on the dataset ``data`` (splits train / valid), in ``out/run``."""
    overrides = [*PRETRAINING, f"data.root={data}", f"output_dir={out}", "run_name=run", *extra]
    return _for_steps(load_config(TrainConfig, None, overrides), steps, data)


def finetune_config(base: Path, data: Path, out: Path, steps: int, extra: Sequence[str] = ()) -> TrainConfig:
    """Fine-tuning the model in ``base`` on ``data`` (split train), in ``out/run``."""
    overrides = [f"model.name={base}", *FINETUNE, f"data.root={data}", f"output_dir={out}", "run_name=run"]
    return _for_steps(load_config(TrainConfig, None, [*overrides, *extra]), steps, data)


def _for_steps(config: TrainConfig, steps: int, data: Path) -> TrainConfig:
    """``config`` running exactly ``steps`` optimizer steps (enough epochs over the train split)."""
    annotations = data / config.data.train / ROBOFLOW_ANNOTATIONS
    images = len(json.loads(annotations.read_text(encoding="utf-8"))["images"])
    per_epoch = max(1, images // config.loop.batch_size)
    loop = dataclasses.replace(config.loop, epochs=-(-steps // per_epoch), max_steps=steps)
    return dataclasses.replace(config, loop=loop)
