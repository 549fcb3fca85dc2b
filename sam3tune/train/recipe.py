"""``train(config) -> RunResult``: build the data, model and criterion a :class:`TrainConfig` describes and
run the loop in a run directory (the ``sam3tune train`` command and the demo call this)."""

from __future__ import annotations

import dataclasses
import gc
import logging
import time
from collections.abc import Callable
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError

from sam3tune.config import ConfigError, save_config
from sam3tune.data import (
    DataConfig,
    DataError,
    collate,
)
from sam3tune.eval.api import make_validator
from sam3tune.model import ModelBundle, build_training_model, load_model
from sam3tune.model.export import save_adapters, save_merged
from sam3tune.output_files import writing
from sam3tune.run_dir import RunDir
from sam3tune.train.checkpoint import load_checkpoint, load_model_state
from sam3tune.train.config import TrainConfig
from sam3tune.train.dataset_kinds import dataset_kind
from sam3tune.train.distributed import DistributedContext, barrier, broadcast_object, init_distributed
from sam3tune.train.loop import RunResult, Trainer, TrainingParts, uses_bf16
from sam3tune.train.memory_ladder import (
    RungChoice,
    choose_rung,
    out_of_memory_action,
    out_of_memory_message,
    rung_config,
)
from sam3tune.train.metrics_log import discard_metrics
from sam3tune.train.param_groups import role_of
from sam3tune.train.resume import find_resume_point, record_resume, resume_changes
from sam3tune.train.run_lock import RunLockedError, run_lock

log = logging.getLogger(__name__)

def load_bundle(config: TrainConfig) -> ModelBundle:
    """The model, tokenizer and input size of ``config.model`` as training loads them."""
    return load_model(
        config.model.name, allow_missing_weights=config.model.allow_missing_weights, seed=config.loop.seed
    )


def build_training_parts(
    config: TrainConfig, context: DistributedContext
) -> tuple[TrainingParts, TrainConfig, RungChoice]:
    """Model (``config.model``), criterion (``config.loss``) and datasets (``config.data``) for the loop,
    the same steps for every kind of dataset (:mod:`sam3tune.train.dataset_kinds` supplies what differs).

    Returns the parts, the config actually used (``data.resolution`` follows the model's input size
    when left at its default; ``loop.memory`` resolved, see :mod:`sam3tune.train.memory_ladder`) and the
    memory rung choice. Training goes on without validation when ``data.val`` names no split of the
    dataset (``DataError`` kind ``split_missing``); any other problem of the split stops it."""
    bundle = load_bundle(config)
    config = dataclasses.replace(config, data=data_for_model(config.data, bundle.image_size))
    kind = dataset_kind(config.data.root)
    config = kind.prepare(config)
    train_dataset = kind.train_dataset(config, bundle.tokenize, progress=context.is_main)
    queries = kind.queries_per_step(train_dataset, config.loop.batch_size)
    choice = choose_rung(config, bundle.model.config, context.device, queries)
    config = choice.config
    if context.is_main:
        log.info("memory: %s", choice.reason)
    model = build_training_model(
        bundle,
        config.model,
        exemplars=kind.uses_exemplars(config),
        bf16_autocast=uses_bf16(config.loop.amp, context.device),
    )
    val_dataset = None
    if config.val.every_epochs > 0:
        try:
            val_dataset = kind.val_dataset(config, bundle.tokenize, progress=context.is_main)
        except DataError as err:
            if err.kind != "split_missing":
                raise
            log.warning("%s: training without validation (set data.val to a split to validate)", err)
    evaluate = None
    if val_dataset is not None and config.val.map and context.is_main:
        evaluate = make_validator(
            val_dataset, bundle.tokenize, config.val.eval, device=context.device, progress=True
        )
    collate_fn = partial(collate, tokenize=bundle.tokenize)
    parts = TrainingParts(
        model=model,
        criterion=kind.criterion(config),
        train_dataset=train_dataset,
        collate_fn=collate_fn,
        role_of=role_of,
        num_vit_blocks=model.num_vit_blocks,
        val_dataset=val_dataset,
        val_collate_fn=collate_fn,
        evaluate=evaluate,
        val_criterion=kind.val_criterion(config),
    )
    return parts, config, choice


def train(
    config: TrainConfig,
    resume: str | Path | None = None,
    on_step_end: Callable[[dict[str, Any]], None] | None = None,
    allow_inexact_resume: bool = False,
) -> RunResult:
    """Run ``config`` in a new run directory (``output_dir/run_name``), or continue the run in ``resume``
    exactly where its `last` checkpoint left it. Under ``torchrun`` every process calls this; rank 0
    writes the run directory and holds its lock (:mod:`sam3tune.train.run_lock`) while training.

    Nothing is written before every check has passed: a refused resume (locked run, unreadable
    checkpoint, an override that breaks exactness, see :mod:`sam3tune.train.resume`) leaves the run
    directory as it was, and a new run whose set-up fails leaves no run directory behind. See
    :meth:`Trainer.fit` for ``on_step_end`` and the errors."""
    context = init_distributed(config.loop.device)
    with ExitStack() as held:
        point, changes = None, {}
        if resume is not None:
            run_dir = Path(resume)
            saved = RunDir(run_dir).config()
            _lock_on_main(held, run_dir, context)
            changes = resume_changes(saved, config, allow_inexact=allow_inexact_resume)
            point = find_resume_point(RunDir(run_dir))
        parts, config, choice = build_training_parts(config, context)
        if resume is None:
            run_dir = _new_run_dir(config, context)
            lock_file = _lock_on_main(held, run_dir, context)
            if lock_file is not None:
                held.callback(_remove_if_unused, run_dir, lock_file)
        while True:
            trainer = Trainer(config, parts, run_dir, context, resume=point if point is not None else False)
            if context.is_main:
                run = RunDir(run_dir)
                with writing(run.config_file, "output_dir"):
                    save_config(config, run.config_file, comment=choice.reason)
                if point is not None:
                    record_resume(run, point, changes)
                log.info("run directory: %s", run_dir)
            barrier(context)
            try:
                result = trainer.fit(on_step_end)
                break
            except torch.cuda.OutOfMemoryError as err:
                lower = _lower_rung_after(err, trainer, choice, run_dir, context, resumed=point is not None)
            del trainer, parts
            torch.cuda.empty_cache()
            parts, config, choice = build_training_parts(rung_config(config, lower), context)
            choice = dataclasses.replace(
                choice, reason=f"loop.memory=auto stepped down to {lower} after an out-of-memory error"
            )
        if config.export and result.status == "completed" and context.is_main:
            _export(trainer, result, config)
        barrier(context)
    return result


def _lower_rung_after(
    err: torch.cuda.OutOfMemoryError,
    trainer: Trainer,
    choice: RungChoice,
    run_dir: Path,
    context: DistributedContext,
    resumed: bool,
) -> str:
    """The memory rung to restart on after ``err`` (the failed attempt's logs removed, its memory
    released), or ``err`` re-raised naming the rung and the next one to try (see
    ``memory_ladder.out_of_memory_action``)."""
    steps = trainer.progress.step
    checkpointed = RunDir(run_dir).checkpoints_dir.exists()
    lower = out_of_memory_action(choice, steps, checkpointed, resumed, context.world_size)
    message = out_of_memory_message(choice, steps)
    if lower is None:
        raise torch.cuda.OutOfMemoryError(f"{message}\n{err}") from err
    log.warning("%s: restarting the run from its first step on rung %s", message, lower)
    if trainer.log is not None:
        trainer.log.close()
    discard_metrics(RunDir(run_dir))
    trainer.optimizer.state.clear()
    gc.collect()
    return lower


def _lock_on_main(held: ExitStack, run_dir: Path, context: DistributedContext) -> Path | None:
    """Rank 0 takes the lock of ``run_dir`` for the rest of ``held`` (returns the lock file); when another
    process holds it, every rank raises :class:`RunLockedError` (no rank is left waiting)."""
    lock_file, problem = None, None
    if context.is_main:
        try:
            lock_file = held.enter_context(run_lock(run_dir))
        except RunLockedError as err:
            problem = str(err)
    problem = broadcast_object(problem, context)
    if problem is not None:
        raise RunLockedError(problem)
    return lock_file


def _remove_if_unused(run_dir: Path, lock_file: Path) -> None:
    """Remove a new run directory that holds nothing but its lock (its set-up failed), so that no
    half-made run is left whose ``--resume`` would fail."""
    if run_dir.is_dir() and [p.name for p in run_dir.iterdir()] in ([], [lock_file.name]):
        lock_file.unlink(missing_ok=True)
        run_dir.rmdir()


def data_for_model(data: DataConfig, image_size: int) -> DataConfig:
    """``data`` at the model's input size: ``data.resolution`` follows it when left at its default; any
    other mismatch is a :class:`~sam3tune.config.ConfigError`."""
    if data.resolution == image_size:
        return data
    if data.resolution != DataConfig().resolution:
        raise ConfigError(
            f"data.resolution={data.resolution} but the model takes {image_size} px images; "
            f"set data.resolution={image_size} (or leave it unset)"
        )
    log.info("data.resolution follows the model's input size: %d", image_size)
    return dataclasses.replace(data, resolution=image_size)


def _new_run_dir(config: TrainConfig, context: DistributedContext) -> Path:
    """``output_dir/run_name`` (default: the start time); an existing directory is never reused."""
    run_dir = None
    if context.is_main:
        keys = "output_dir, run_name" if config.run_name is not None else "output_dir"
        with writing(Path(config.output_dir) / (config.run_name or ""), keys):
            run_dir = _free_run_dir(config)
            run_dir.mkdir(parents=True)
    return Path(broadcast_object(str(run_dir) if run_dir else None, context))


def _free_run_dir(config: TrainConfig) -> Path:
    """``output_dir/run_name``, refused when it exists; without a ``run_name``, ``output_dir/<start
    time>`` with a suffix that makes it new."""
    if config.run_name is not None:
        run_dir = Path(config.output_dir) / config.run_name
        if run_dir.exists():
            raise ConfigError(
                f"run directory {run_dir} exists: choose another run_name, or continue it with "
                f"--resume {run_dir}",
                key="run_name",
            )
        return run_dir
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = Path(config.output_dir) / stamp
    suffix = 1
    while run_dir.exists():
        suffix += 1
        run_dir = Path(config.output_dir) / f"{stamp}-{suffix}"
    return run_dir


def _export(trainer: Trainer, result: RunResult, config: TrainConfig) -> None:
    """Write the best (else the last) weights as a plain transformers model to ``RUN_DIR/model`` and, in
    LoRA mode, the adapters to ``RUN_DIR/adapters``."""
    source = result.best_checkpoint or result.checkpoint
    model_state, _, _ = load_checkpoint(source)
    load_model_state(trainer.module, model_state, source)
    run = RunDir(result.run_dir)
    with writing(run.model_dir, "output_dir", also=(SafetensorError,)):
        save_merged(trainer.module, run.model_dir)
    if config.model.finetune.mode == "lora":
        with writing(run.adapters_dir, "output_dir", also=(SafetensorError,)):
            save_adapters(trainer.module, run.adapters_dir)
    log.info("exported the weights of %s to %s", source, run.model_dir)
