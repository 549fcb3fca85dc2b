"""``train(config) -> RunResult``: build the data, model and criterion a :class:`TrainConfig` describes and
run the loop in a run directory (the ``sam3tune train`` command and the demo call this)."""

from __future__ import annotations

import dataclasses
import gc
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch

from sam3tune.config import load_config, save_config
from sam3tune.data import (
    DataConfig,
    DataError,
    build_eval_dataset,
    build_train_dataset,
    collate,
)
from sam3tune.eval.model_eval import make_validator
from sam3tune.loss import Sam3Criterion
from sam3tune.model import build_training_model, load_model
from sam3tune.model.components import component_of, is_adapter_parameter, model_path, vit_layer_id
from sam3tune.model.export import save_adapters, save_merged
from sam3tune.train.checkpoint import load_checkpoint, load_model_state
from sam3tune.train.config import TrainConfig, trains_in_bf16
from sam3tune.train.distributed import DistributedContext, barrier, broadcast_object, init_distributed
from sam3tune.train.loop import RunResult, Trainer, TrainingParts
from sam3tune.train.memory_ladder import (
    RungChoice,
    choose_rung,
    out_of_memory_action,
    out_of_memory_message,
    queries_per_step,
    rung_config,
)
from sam3tune.train.param_groups import ParamRole

log = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
_LR_FAMILY = {"vision": "vision", "text": "text"}  # every other component: lr_transformer


def recipe_role(name: str, num_vit_blocks: int) -> ParamRole:
    """The recipe role of a ``Sam3ForTraining`` parameter: vision (ViT + FPN neck) and text (CLIP +
    projection) get their own learning rates, everything else (DETR encoder/decoder, mask decoder,
    geometry encoder, heads) ``lr_transformer``. Inside the ViT trunk the stem and blocks get a depth for
    layer-wise decay; the position embedding keeps scale 1 (the recipe's ``*pos_embed*`` override), as does
    the rest of the trunk."""
    component = component_of(name)
    depth = None
    if component == "vision" and not model_path(name).endswith("position_embeddings"):
        layer_id = vit_layer_id(name, num_vit_blocks)
        if layer_id is not None and layer_id <= num_vit_blocks:
            depth = layer_id
    return ParamRole(
        _LR_FAMILY.get(component, "transformer"), vit_depth=depth, is_adapter=is_adapter_parameter(name)
    )


def load_run_config(run_dir: str | Path, overrides: Sequence[str] = ()) -> TrainConfig:
    """The resolved config of an existing run (``RUN_DIR/config.yaml``), with ``overrides`` applied."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a sam3tune run directory (no {CONFIG_FILE})")
    return load_config(TrainConfig, path, overrides)


def build_training_parts(
    config: TrainConfig, context: DistributedContext
) -> tuple[TrainingParts, TrainConfig, RungChoice]:
    """Model (``config.model``), criterion (``config.loss``) and datasets (``config.data``) for the loop.

    Returns the parts, the config actually used (``data.resolution`` follows the model's input size
    when left at its default; ``loop.memory`` resolved to a rung, see ``memory_ladder``) and the memory
    rung choice."""
    bundle = load_model(
        config.model.name, allow_missing_weights=config.model.allow_missing_weights, seed=config.loop.seed
    )
    config = dataclasses.replace(config, data=_data_for_model(config.data, bundle.image_size))
    train_dataset = build_train_dataset(
        config.data, seed=config.loop.seed, progress=context.is_main, augment=config.loop.augment
    )
    choice = choose_rung(
        config, bundle.model.config, context.device, queries_per_step(train_dataset, config.loop.batch_size)
    )
    config = choice.config
    if context.is_main:
        log.info("memory: %s", choice.reason)
    bf16 = trains_in_bf16(config.loop.amp, context.device.type)
    model = build_training_model(bundle, config.model, bf16_autocast=bf16)
    val_dataset = None
    if config.val.every_epochs > 0:
        try:
            val_dataset = build_eval_dataset(config.data, progress=context.is_main)
        except DataError as err:
            if err.kind != "empty_split" or "no split" not in str(err):
                raise
            log.warning("%s: training without validation (set data.val to a split to validate)", err)
    if not config.val.map and "loss" not in config.val.best_metric:
        raise ValueError(
            f"val.best_metric={config.val.best_metric!r} needs the COCO metrics, but val.map is false; "
            "set val.map=true or val.best_metric=loss val.best_mode=min"
        )
    evaluate = None
    if val_dataset is not None and config.val.map and context.is_main:
        evaluate = make_validator(
            val_dataset, bundle.tokenize, config.val.eval, device=context.device, progress=True
        )
    collate_fn = partial(collate, tokenize=bundle.tokenize)
    num_blocks = int(model.core.config.vision_config.backbone_config.num_hidden_layers)
    parts = TrainingParts(
        model=model,
        criterion=Sam3Criterion(config.loss),
        train_dataset=train_dataset,
        collate_fn=collate_fn,
        role_of=partial(recipe_role, num_vit_blocks=num_blocks),
        num_vit_blocks=num_blocks,
        val_dataset=val_dataset,
        val_collate_fn=collate_fn,
        evaluate=evaluate,
        val_criterion=Sam3Criterion(dataclasses.replace(config.loss, normalization="local")),
    )
    return parts, config, choice


def train(
    config: TrainConfig,
    resume: str | Path | None = None,
    on_step_end: Callable[[dict[str, Any]], None] | None = None,
) -> RunResult:
    """Run ``config`` in a new run directory (``output_dir/run_name``), or continue the run in ``resume``
    exactly where its `last` checkpoint left it. Under ``torchrun`` every process calls this; rank 0
    writes the run directory. See :meth:`Trainer.fit` for ``on_step_end`` and the errors.

    With ``loop.memory=auto`` on CUDA, a CUDA out-of-memory error in the first steps restarts the run
    from its first step one memory rung lower (``memory_ladder``); any other one names the next rung."""
    context = init_distributed(config.loop.device)
    parts, config, choice = build_training_parts(config, context)
    run_dir = Path(resume) if resume is not None else _new_run_dir(config, context)
    while True:
        if context.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            save_config(config, run_dir / CONFIG_FILE, comment=choice.reason)
            log.info("run directory: %s", run_dir)
        barrier(context)
        trainer = Trainer(config, parts, run_dir, context, resume=resume is not None)
        try:
            result = trainer.fit(on_step_end)
            break
        except torch.cuda.OutOfMemoryError as err:
            checkpointed = (run_dir / "checkpoints").exists()
            lower = out_of_memory_action(
                choice, trainer.step, checkpointed, resume is not None, context.world_size
            )
            message = out_of_memory_message(choice, trainer.step)
            if lower is None:
                raise torch.cuda.OutOfMemoryError(f"{message}\n{err}") from err
            log.warning("%s: restarting the run from its first step on rung %s", message, lower)
            _release(trainer, run_dir)
            del trainer, parts, err
            torch.cuda.empty_cache()
            parts, config, choice = build_training_parts(rung_config(config, lower), context)
            choice = dataclasses.replace(
                choice, reason=f"loop.memory=auto stepped down to {lower} after an out-of-memory error"
            )
    if config.export and result.status == "completed" and context.is_main:
        _export(trainer, result, config)
    barrier(context)
    return result


def _release(trainer: Trainer, run_dir: Path) -> None:
    """Close the failed attempt's logs and remove them, so that the restarted run writes a clean log."""
    if trainer.log is not None:
        trainer.log.close()
    (run_dir / "metrics.jsonl").unlink(missing_ok=True)
    shutil.rmtree(run_dir / "tb", ignore_errors=True)
    trainer.optimizer.state.clear()
    gc.collect()


def _data_for_model(data: DataConfig, image_size: int) -> DataConfig:
    if data.resolution == image_size:
        return data
    if data.resolution != DataConfig().resolution:
        raise ValueError(
            f"data.resolution={data.resolution} but the model takes {image_size}x{image_size} images; "
            f"set data.resolution={image_size} (or leave it unset)"
        )
    log.info("data.resolution follows the model's input size: %d", image_size)
    return dataclasses.replace(data, resolution=image_size)


def _new_run_dir(config: TrainConfig, context: DistributedContext) -> Path:
    """``output_dir/run_name`` (default: the start time); an existing directory is never reused."""
    run_dir = None
    if context.is_main:
        if config.run_name is not None:
            run_dir = Path(config.output_dir) / config.run_name
            if run_dir.exists():
                raise FileExistsError(
                    f"run directory {run_dir} exists: choose another run_name, or continue it with "
                    f"--resume {run_dir}"
                )
        else:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            run_dir = Path(config.output_dir) / stamp
            suffix = 1
            while run_dir.exists():
                suffix += 1
                run_dir = Path(config.output_dir) / f"{stamp}-{suffix}"
        run_dir.mkdir(parents=True)
    return Path(broadcast_object(str(run_dir) if run_dir else None, context))


def _export(trainer: Trainer, result: RunResult, config: TrainConfig) -> None:
    """Write the best (else the last) weights as a plain transformers model to ``RUN_DIR/model`` and, in
    LoRA mode, the adapters to ``RUN_DIR/adapters``."""
    source = result.best_checkpoint or result.checkpoint
    model_state, _, _ = load_checkpoint(source)
    load_model_state(trainer.module, model_state, source)
    save_merged(trainer.module, result.run_dir / "model")
    if config.model.finetune.mode == "lora":
        save_adapters(trainer.module, result.run_dir / "adapters")
    log.info("exported the weights of %s to %s", source, result.run_dir / "model")
