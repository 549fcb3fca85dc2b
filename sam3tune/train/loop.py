"""The training loop: optimizer steps with gradient accumulation, clipping and bf16 autocast;
NaN/inf guard; validation; atomic checkpoints; exact resume; DDP; logs and progress bar.

The loop is independent of how its parts are built: :class:`TrainingParts` carries the model, the
criterion, the datasets and the parameter roles, and :func:`sam3tune.train.recipe.train` builds them
from a :class:`~sam3tune.train.config.TrainConfig`.

Exactness of resume: the data order is a function of (seed, epoch, batch) (see
:class:`~sam3tune.train.sampler.EpochBatchSampler`); data-loader workers get their seeds from a
generator seeded per epoch, never from the global RNG; validation runs inside
:func:`~sam3tune.train.rng_state.preserved_rng_state`; and a checkpoint holds every process's RNG
states. So a run resumed from the checkpoint taken after step ``s`` computes step ``s + 1`` from the
same weights, optimizer state, batch and random numbers as the uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import signal
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils._pytree import tree_flatten, tree_map_only
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from sam3tune.config import ConfigError
from sam3tune.errors import EXIT_NOT_FINISHED, UserError
from sam3tune.output_files import writing
from sam3tune.progress import progress_bar
from sam3tune.run_dir import RunDir
from sam3tune.train.checkpoint import (
    WRITE_ERRORS,
    CheckpointError,
    load_model_state,
    model_state_to_save,
    save_checkpoint,
)
from sam3tune.train.config import TrainConfig
from sam3tune.train.distributed import (
    DistributedContext,
    all_reduce_sum,
    barrier,
    broadcast_object,
    gather_objects,
)
from sam3tune.train.loss_curve import plot_loss_curve
from sam3tune.train.metrics_log import MetricsLog, read_metrics
from sam3tune.train.param_groups import ParamRole, build_optimizer
from sam3tune.train.resume import ResumePoint, find_resume_point
from sam3tune.train.rng_state import capture_rng_state, preserved_rng_state, restore_rng_state
from sam3tune.train.sampler import EpochBatchSampler
from sam3tune.train.schedule import InverseSqrtSchedule

log = logging.getLogger(__name__)

Criterion = Callable[[dict[str, Any], list[dict[str, torch.Tensor]]], dict[str, torch.Tensor]]

# Short progress-bar names of the running losses shown next to the total.
_BAR_COMPONENTS = {
    "loss_ce": "ce",
    "presence_loss": "pres",
    "loss_bbox": "bbox",
    "loss_giou": "giou",
    "loss_mask": "mask",
    "loss_dice": "dice",
}
_CHECKPOINT_FORMAT = 1
_KEEP_EPOCH_BAR_STEPS = 20  # shorter epochs clear their progress bar (no screenful of 6-step bars)


class TrainingDivergedError(UserError, RuntimeError):
    """The loss stayed NaN or inf for too many optimizer steps in a row (exit status 3; ``last`` is saved)."""

    exit_status = EXIT_NOT_FINISHED


@dataclass
class TrainingProgress:
    """Where a run stands: its counters, saved in every checkpoint and restored on resume."""

    step: int = 0  # optimizer steps completed
    epoch: int = 0  # epochs completed
    step_in_epoch: int = 0  # optimizer steps completed in the current epoch
    skipped_steps: int = 0  # steps skipped for a NaN/inf loss or gradient
    consecutive_nonfinite: int = 0  # NaN/inf steps in a row up to now
    best_value: float | None = None  # best value of config.val.best_metric so far

    def state_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for field in fields(self):
            setattr(self, field.name, state[field.name])


def uses_bf16(amp: str, device: torch.device) -> bool:
    """The precision of training (``loop.amp``): bf16 autocast when ``bf16``, or ``auto`` on CUDA."""
    return amp == "bf16" or (amp == "auto" and device.type == "cuda")


def forward_and_loss(
    model: nn.Module, batch: Any, criterion: Criterion, bf16: bool
) -> dict[str, torch.Tensor]:
    """The criterion's dict for ``batch`` (on the model's device), the forward under bf16 autocast when
    ``bf16``. The outputs go to the criterion as the model made them: it computes the loss in float32
    (it upcasts what it uses). Non-finite outputs (a diverging model) are zeroed so that the criterion
    still runs (its collectives stay in step across processes) and the total is set to NaN, which makes
    the step a skipped one."""
    device = batch.pixel_values.device
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        outputs = model(**batch.model_inputs())
    floats = [t for t in tree_flatten(outputs)[0] if isinstance(t, torch.Tensor) and t.is_floating_point()]
    finite = bool(torch.stack([torch.isfinite(t).all() for t in floats]).all())  # one host sync
    if not finite:
        outputs = tree_map_only(torch.Tensor, _zero_nonfinite, outputs)
    losses = criterion(outputs, batch.targets)
    if not finite:
        losses = {**losses, "loss": losses["loss"] * float("nan")}
    return losses


@dataclass
class TrainingParts:
    """What the loop trains and on what.

    ``model``: ``forward(**batch.model_inputs())`` (pixel_values, image_index, input_ids, attention_mask,
    and exemplar boxes / labels when the batch has them) -> outputs dict of ``sam3tune.loss``;
    ``criterion(outputs, targets)`` -> dict with the differentiable total ``loss`` and scalar components;
    datasets of single samples with their collates producing a
    ``sam3tune.data.Batch``; ``role_of(parameter name)`` -> :class:`ParamRole`; ``num_vit_blocks`` for
    the layer-wise decay; ``evaluate(model)`` -> metrics (e.g. COCO mAP) computed on the main process;
    ``val_criterion``: the criterion for the validation loss (default ``criterion``). Validation shards
    may differ in length across processes, so it must not all-reduce (use ``local`` normalisation).
    """

    model: nn.Module
    criterion: Criterion
    train_dataset: Dataset
    collate_fn: Callable[[list[Any]], Any]
    role_of: Callable[[str], ParamRole]
    num_vit_blocks: int
    val_dataset: Dataset | None = None
    val_collate_fn: Callable[[list[Any]], Any] | None = None
    evaluate: Callable[[nn.Module], dict[str, float]] | None = None
    val_criterion: Criterion | None = None


@dataclass
class RunResult:
    """The outcome of :meth:`Trainer.fit`."""

    run_dir: Path
    status: Literal["completed", "interrupted"]
    steps: int  # optimizer steps completed in the run (all segments)
    total_steps: int  # steps the schedule spans
    epochs: int  # epochs completed
    skipped_steps: int  # steps skipped for a NaN/inf loss or gradient
    last_train: dict[str, float]  # the last step's record
    last_val: dict[str, float] | None  # the last validation's results
    best_value: float | None  # best value of config.val.best_metric so far
    checkpoint: Path  # RUN_DIR/checkpoints/last
    best_checkpoint: Path | None
    loss_curve: Path | None


class Trainer:
    """Runs (or resumes) one training run in ``run_dir``; see :meth:`fit`."""

    def __init__(
        self,
        config: TrainConfig,
        parts: TrainingParts,
        run_dir: Path,
        context: DistributedContext,
        resume: bool | ResumePoint = False,
    ) -> None:
        self.config = config
        self.parts = parts
        self.run_dir = Path(run_dir)
        self.run = RunDir(run_dir)
        self.context = context
        loop = config.loop
        self.sampler = EpochBatchSampler(
            len(parts.train_dataset),
            loop.batch_size,
            seed=loop.seed,
            rank=context.rank,
            world_size=context.world_size,
        )
        self.steps_per_epoch = len(self.sampler) // loop.grad_accum_steps
        if self.steps_per_epoch == 0:
            raise ConfigError(
                f"an epoch has {len(self.sampler)} batch(es) per process, fewer than "
                f"loop.grad_accum_steps={loop.grad_accum_steps}: no optimizer step would happen"
            )
        total = loop.epochs * self.steps_per_epoch
        self.total_steps = min(total, loop.max_steps) if loop.max_steps is not None else total  # >= 1
        self.schedule = InverseSqrtSchedule(
            warmup_steps=config.schedule.warmup_steps,
            cooldown_steps=config.schedule.cooldown_steps,
            timescale=config.schedule.timescale,
            total_steps=self.total_steps,
        )

        self.progress = TrainingProgress()  # overwritten by a resumed checkpoint
        self.bf16 = uses_bf16(loop.amp, context.device)
        self.last_val: dict[str, float] | None = None
        self._resume_rng: dict[str, Any] | None = None
        self._stop = threading.Event()

        module = parts.model
        state = None
        if resume:  # True: the run's `last` checkpoint (else `best`); or the ResumePoint read already
            point = resume if isinstance(resume, ResumePoint) else find_resume_point(self.run)
            checkpoint, state = point.path, point.training_state
            load_model_state(module, point.model_state, checkpoint)
            self._restore_counters(state, checkpoint)
        module.to(context.device)
        self.module = module
        self.model: nn.Module = module
        if context.is_distributed:
            device_ids = [context.device.index] if context.device.type == "cuda" else None
            self.model = DistributedDataParallel(
                module, device_ids=device_ids, find_unused_parameters=loop.find_unused_parameters
            )
        self.optimizer = build_optimizer(module, parts.role_of, parts.num_vit_blocks, config.optim)
        self.trainable = [p for group in self.optimizer.param_groups for p in group["params"]]
        if state is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        self.log = None
        if context.is_main:
            self.log = MetricsLog(self.run, resume_step=self.progress.step if resume else None)

    # ----------------------------------------------------------------------------------------- run
    def request_stop(self) -> None:
        """Finish the current optimizer step, save the `last` checkpoint and return (resumable)."""
        self._stop.set()

    def fit(self, on_step_end: Callable[[dict[str, Any]], None] | None = None) -> RunResult:
        """Train until the schedule's last step (or a stop request); return the :class:`RunResult`.

        ``on_step_end(record)`` is called on every process after each optimizer step with the step's
        log record. Raises :class:`TrainingDivergedError` (after saving a checkpoint) when
        ``loop.max_consecutive_nonfinite`` steps in a row had a NaN/inf loss or gradient.
        """
        if self._resume_rng is not None:
            restore_rng_state(self._resume_rng)
        else:
            _seed_all(self.config.loop.seed + self.context.rank)
            if self.parts.val_dataset is not None and self.config.val.every_epochs > 0:
                self._validate()  # the starting model: zero-shot, the val record of step 0 (eval/verdict.py)
                self.progress.best_value = None  # the `best` checkpoint is chosen among trained weights
        last_record: dict[str, Any] = {}
        status: Literal["completed", "interrupted"] = "completed"
        with self._stop_on_signals():
            while self.progress.step < self.total_steps:
                last_record, stopped = self._run_epoch(on_step_end, last_record)
                if stopped:
                    status = "interrupted"
                    break
        if status == "completed" and self.log is not None:
            with writing(self.run.loss_curve, "output_dir"):
                records = read_metrics(self.run.metrics_file)
                curve = plot_loss_curve(records, self.run.loss_curve, self.config.val.best_metric)
        else:
            curve = None
        if self.log is not None:
            self.log.close()
        best = self.run.checkpoint("best")
        return RunResult(
            run_dir=self.run_dir,
            status=status,
            steps=self.progress.step,
            total_steps=self.total_steps,
            epochs=self.progress.epoch,
            skipped_steps=self.progress.skipped_steps,
            last_train={k: v for k, v in last_record.items() if isinstance(v, (int, float))},
            last_val=self.last_val,
            best_value=self.progress.best_value,
            checkpoint=self.run.checkpoint("last"),
            best_checkpoint=best if best.exists() else None,
            loss_curve=curve,
        )

    def _run_epoch(
        self, on_step_end: Callable[[dict[str, Any]], None] | None, last_record: dict[str, Any]
    ) -> tuple[dict[str, Any], bool]:
        """Steps of the current epoch from the current position, then validation and checkpoints.
        Returns the last record and whether the run stopped before its end (a stop request)."""
        loop, progress = self.config.loop, self.progress
        epoch = progress.epoch
        self.sampler.set_epoch(epoch, progress.step_in_epoch * loop.grad_accum_steps)
        set_epoch = getattr(self.parts.train_dataset, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(epoch)
        loader = self._loader(
            self.parts.train_dataset, self.sampler, self.parts.collate_fn, seed=loop.seed * 100_003 + epoch
        )
        steps_here = min(self.steps_per_epoch, progress.step_in_epoch + self.total_steps - progress.step)
        window: dict[str, deque] = {}
        bar = progress_bar(
            total=steps_here,
            initial=progress.step_in_epoch,
            desc=f"epoch {epoch + 1}/{math.ceil(self.total_steps / self.steps_per_epoch)}",
            disable=not self.context.is_main,
            leave=self.steps_per_epoch >= _KEEP_EPOCH_BAR_STEPS,
            dynamic_ncols=True,
        )
        batches = iter(loader)
        stopped = False
        dropped: Counter = Counter()
        try:
            while progress.step_in_epoch < steps_here and not stopped:
                started = time.perf_counter()
                micro_batches = [next(batches) for _ in range(loop.grad_accum_steps)]
                for batch in micro_batches:
                    dropped.update(getattr(batch, "dropped", None) or {})
                record, stop_flag = self.train_step(micro_batches)
                progress.step += 1
                progress.step_in_epoch += 1
                record = {"kind": "train", "step": progress.step, "epoch": epoch + 1, **record}
                record["seconds"] = time.perf_counter() - started
                if self.log is not None:
                    self.log.write(record)
                _update_bar(bar, window, record)
                last_record = record
                if on_step_end is not None:
                    on_step_end(record)
                if progress.consecutive_nonfinite >= loop.max_consecutive_nonfinite:
                    self._diverged()
                stopped = stop_flag or self._any_stop_requested()
                mid_epoch = progress.step_in_epoch < steps_here
                if not stopped and mid_epoch and _every(loop.checkpoint_every_steps, progress.step):
                    self._save("last")
        finally:
            bar.close()
            del batches
        _log_dropped(dropped, epoch, self.context.is_main)
        return last_record, self._end_of_steps(stopped)

    def _end_of_steps(self, stopped: bool) -> bool:
        """After a run of steps (an epoch, or its part up to the end of the run or a stop): close the epoch
        when it is complete, validate and save checkpoints when due; returns whether the run stops here
        before its end (a stop request)."""
        progress, every_val = self.progress, self.config.val.every_epochs
        if progress.step_in_epoch == self.steps_per_epoch:
            progress.epoch, progress.step_in_epoch = progress.epoch + 1, 0
        run_done = progress.step >= self.total_steps
        epoch_end = progress.step_in_epoch == 0
        validation_due = run_done or (epoch_end and _every(every_val, progress.epoch))
        try:
            improved = (
                self.parts.val_dataset is not None and every_val > 0 and validation_due and self._validate()
            )
        except Exception:
            self._save("last")  # a failed validation keeps the epoch's training (resumable)
            raise
        loop = self.config.loop
        checkpoint_due = (epoch_end and _every(loop.checkpoint_every_epochs, progress.epoch)) or _every(
            loop.checkpoint_every_steps, progress.step
        )
        if run_done or stopped or improved or checkpoint_due:
            self._save("last")
        if improved:
            self._save("best")
        return stopped and not run_done

    # ---------------------------------------------------------------------------------------- step
    def train_step(self, micro_batches: list[Any]) -> tuple[dict[str, Any], bool]:
        """One optimizer step at the current step's learning rate over ``micro_batches`` (gradient
        accumulation, clipping, NaN/inf skip); returns (log record, stop requested on any process).
        The loop calls it; it does not advance ``progress.step`` (benchmarks call it directly)."""
        factor = self.schedule.factor(self.progress.step)
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor
        self.model.train()
        totals: dict[str, torch.Tensor] = {}
        count = len(micro_batches)
        for index, batch in enumerate(micro_batches):
            last = index == count - 1
            sync = nullcontext() if last or not self.context.is_distributed else self.model.no_sync()
            with sync:
                losses = forward_and_loss(self.model, self._on_device(batch), self.parts.criterion, self.bf16)
                (losses["loss"] / count).backward()
            for key, value in losses.items():
                totals[key] = totals.get(key, 0.0) + torch.as_tensor(value).detach().float() / count
        max_norm = self.config.optim.grad_clip_norm
        grad_norm = torch.nn.utils.clip_grad_norm_(
            self.trainable, max_norm=max_norm if max_norm is not None else math.inf
        )
        keys = sorted(totals)
        local_bad = ~(torch.isfinite(totals["loss"]) & torch.isfinite(grad_norm).to(totals["loss"].device))
        vector = torch.stack(
            [*(totals[k] for k in keys), local_bad.float(), torch.tensor(float(self._stop.is_set()))]
        )
        reduced = all_reduce_sum(
            vector.to(self.context.device), self.context
        ).cpu()  # the step's one host sync
        means = reduced[: len(keys)] / self.context.world_size
        nonfinite, stop = bool(reduced[-2] > 0), bool(reduced[-1] > 0)
        if nonfinite:
            self.progress.skipped_steps += 1
            self.progress.consecutive_nonfinite += 1
        else:
            self.optimizer.step()
            self.progress.consecutive_nonfinite = 0
        self.optimizer.zero_grad(set_to_none=True)
        record: dict[str, Any] = {key: float(value) for key, value in zip(keys, means, strict=True)}
        record.update(
            grad_norm=float(grad_norm),
            lr_factor=factor,
            lr_transformer=self.config.optim.lr_transformer * factor,
            skipped=nonfinite,
        )
        return record, stop

    def _on_device(self, batch: Any) -> Any:
        return (
            batch if self.context.device.type == "cpu" else batch.to(self.context.device, non_blocking=True)
        )

    # ---------------------------------------------------------------------------------- validation
    def _validate(self) -> bool:
        """Validation loss (all processes, sharded) and ``parts.evaluate`` (main process); logs them
        and returns whether ``val.best_metric`` improved."""
        context = self.context
        val = self.parts.val_dataset
        assert val is not None
        with preserved_rng_state(), torch.no_grad():
            self.module.eval()
            shard = Subset(val, range(context.rank, len(val), context.world_size))
            loader = self._loader(
                shard,
                None,
                self.parts.val_collate_fn or self.parts.collate_fn,
                seed=self.config.loop.seed,
                batch_size=self.config.loop.batch_size,
            )
            criterion = self.parts.val_criterion or self.parts.criterion
            totals: dict[str, torch.Tensor] = {}
            batches = 0
            for batch in progress_bar(loader, desc="validation", disable=not context.is_main, leave=False):
                losses = forward_and_loss(self.module, self._on_device(batch), criterion, self.bf16)
                for key, value in losses.items():
                    totals[key] = totals.get(key, 0.0) + torch.as_tensor(value).detach().float().cpu()
                batches += 1
            keys = sorted(totals)
            vector = torch.stack([totals[k] for k in keys] + [torch.tensor(float(batches))])
            reduced = all_reduce_sum(vector.to(context.device), context).cpu()
            count = max(float(reduced[-1]), 1.0)
            results = {k: float(v) / count for k, v in zip(keys, reduced[:-1], strict=True)}
            if self.parts.evaluate is not None and context.is_main:
                results.update(self.parts.evaluate(self.module))
            results = broadcast_object(results, context)
            self.module.train()
        metric = self.config.val.best_metric
        if metric not in results:
            raise ConfigError(
                f"val.best_metric {metric!r} is not among the validation results {sorted(results)}"
            )
        value, best = results[metric], self.progress.best_value
        improved = math.isfinite(value) and (
            best is None or (value < best if self.config.val.best_mode == "min" else value > best)
        )
        if improved:
            self.progress.best_value = value
        self.last_val = results
        if self.log is not None:
            self.log.write(
                {"kind": "val", "step": self.progress.step, "epoch": self.progress.epoch, **results}
            )
            tqdm.write(
                f"validation after step {self.progress.step}: "
                + ", ".join(f"{k}={v:.4g}" for k, v in results.items() if "_aux_" not in k and "o2m" not in k)
            )
        return improved

    # -------------------------------------------------------------------------------- checkpoints
    def _save(self, name: Literal["last", "best"]) -> Path:
        """Write checkpoint ``name`` (all processes take part; rank 0 writes)."""
        rng_states = gather_objects(capture_rng_state(), self.context)
        path = self.run.checkpoint(name)
        if self.context.is_main:
            progress = self.progress.state_dict()
            training_state = {
                "format": _CHECKPOINT_FORMAT,
                **progress,
                "steps_per_epoch": self.steps_per_epoch,
                "world_size": self.context.world_size,
                "optimizer": self.optimizer.state_dict(),
                "rng": rng_states,
            }
            meta = {
                **progress,
                "total_steps": self.total_steps,
                "best_metric": self.config.val.best_metric,
                "last_val": self.last_val,
            }
            with writing(path, "output_dir", also=WRITE_ERRORS):
                save_checkpoint(path, model_state_to_save(self.module), training_state, meta)
        barrier(self.context)
        return path

    def _restore_counters(self, state: dict[str, Any], where: Path) -> None:
        if state.get("format") != _CHECKPOINT_FORMAT:
            raise CheckpointError(
                f"checkpoint {where} has format {state.get('format')}, expected {_CHECKPOINT_FORMAT}"
            )
        if state["world_size"] != self.context.world_size:
            raise CheckpointError(
                f"checkpoint {where} was written by a run of {state['world_size']} process(es); resume it "
                f"with the same number (this run has {self.context.world_size}): the data order and RNG "
                "streams are per process"
            )
        if state["steps_per_epoch"] != self.steps_per_epoch:
            raise CheckpointError(
                f"checkpoint {where} was written with {state['steps_per_epoch']} steps per epoch, this "
                f"configuration gives {self.steps_per_epoch}: the dataset, batch size or accumulation changed"
            )
        self.progress.load_state_dict(state)
        self._resume_rng = state["rng"][self.context.rank]

    def _diverged(self) -> None:
        path = self._save("last")
        progress = self.progress
        count = progress.consecutive_nonfinite
        raise TrainingDivergedError(
            f"the loss or its gradient was NaN/inf for {count} optimizer steps in a row (steps "
            f"{progress.step - count + 1}-{progress.step}; {progress.skipped_steps} skipped in all), so "
            f"training stopped. The run is saved in {path} (skipped steps left the weights unchanged). Usual "
            "causes: a learning rate too high for this setup (lower optim.lr_*), or broken targets "
            "(check the data with `sam3tune data inspect`). loop.max_consecutive_nonfinite sets the limit."
        )

    # ------------------------------------------------------------------------------------ helpers
    def _loader(
        self,
        dataset: Dataset,
        batch_sampler: EpochBatchSampler | None,
        collate_fn: Callable[[list[Any]], Any],
        *,
        seed: int,
        batch_size: int | None = None,
    ) -> DataLoader:
        generator = torch.Generator().manual_seed(seed * 1_009 + self.context.rank)
        workers = self.config.loop.num_workers
        common = {
            "collate_fn": collate_fn,
            "num_workers": workers,
            "generator": generator,
            "pin_memory": self.context.device.type == "cuda",
        }
        if batch_sampler is not None:
            return DataLoader(dataset, batch_sampler=batch_sampler, **common)
        return DataLoader(dataset, batch_size=batch_size, shuffle=False, **common)

    def _any_stop_requested(self) -> bool:
        return self._stop.is_set() and not self.context.is_distributed

    @contextmanager
    def _stop_on_signals(self) -> Iterator[None]:
        """The first SIGINT/SIGTERM asks for a clean stop after the current step; a second SIGINT
        interrupts at once."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            if self._stop.is_set() and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self._stop.set()
            if self.context.is_main:
                tqdm.write("stopping after this step; the `last` checkpoint will be saved (resumable)")

        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)


def _log_dropped(dropped: Counter, epoch: int, is_main: bool) -> None:
    """Warn about what the data transforms removed in an epoch (``sam3tune.data.Sample.dropped``)."""
    if not is_main or not any(dropped.values()):
        return
    log.warning(
        "epoch %d: the transforms left out %d object(s) whose box became empty, %d positive quer(y/ies) "
        "left without an object and %d mask(s) with no pixel at the target resolution (this process)",
        epoch + 1,
        dropped["empty_objects"],
        dropped["empty_queries"],
        dropped["empty_masks"],
    )


def _seed_all(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _every(period: int | None, count: int) -> bool:
    """Whether ``count`` is a multiple of ``period`` (never when ``period`` is 0 or None)."""
    return bool(period) and count % period == 0


def _zero_nonfinite(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` with NaN and inf replaced by 0 (floating tensors only)."""
    return torch.nan_to_num(tensor, nan=0.0, posinf=0.0, neginf=0.0) if tensor.is_floating_point() else tensor


def _update_bar(bar: tqdm, window: dict[str, deque], record: dict[str, Any]) -> None:
    """Advance the bar and show the running mean (last 20 steps) of the total and main components."""
    shown = {"loss": "loss", **_BAR_COMPONENTS}
    postfix = {}
    for key, short in shown.items():
        value = record.get(key)
        if value is None:
            continue
        values = window.setdefault(key, deque(maxlen=20))
        if math.isfinite(value):
            values.append(value)
        if values:
            postfix[short] = f"{sum(values) / len(values):.4g}"
    if record.get("skipped"):
        postfix["skipped"] = "nan"
    bar.set_postfix(postfix, refresh=False)
    bar.update(1)
