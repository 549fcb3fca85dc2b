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
import math
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from sam3tune.train.checkpoint import (
    load_checkpoint,
    load_model_state,
    model_state_to_save,
    save_checkpoint,
)
from sam3tune.train.config import TrainConfig, trains_in_bf16
from sam3tune.train.distributed import (
    DistributedContext,
    all_reduce_sum,
    barrier,
    broadcast_object,
    gather_objects,
)
from sam3tune.train.loss_curve import plot_loss_curve
from sam3tune.train.metrics_log import MetricsLog, read_metrics
from sam3tune.train.optimizer import build_optimizer
from sam3tune.train.param_groups import ParamRole, build_param_groups, no_weight_decay_names
from sam3tune.train.rng_state import capture_rng_state, preserved_rng_state, restore_rng_state
from sam3tune.train.sampler import EpochBatchSampler
from sam3tune.train.schedule import InverseSqrtSchedule

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


class TrainingDivergedError(RuntimeError):
    """The loss stayed NaN or inf for too many optimizer steps in a row."""


@dataclass
class TrainingParts:
    """What the loop trains and on what.

    ``model``: ``forward(pixel_values, image_index, input_ids, attention_mask)`` -> outputs dict of
    ``sam3tune.loss``; ``criterion(outputs, targets)`` -> dict with the differentiable total ``loss``
    and scalar components; datasets of single samples with their collates producing a
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
        resume: bool = False,
    ) -> None:
        self.config = config
        self.parts = parts
        self.run_dir = Path(run_dir)
        self.context = context
        loop = config.loop
        if loop.grad_accum_steps < 1:
            raise ValueError(f"loop.grad_accum_steps must be >= 1, got {loop.grad_accum_steps}")
        self.sampler = EpochBatchSampler(
            len(parts.train_dataset),
            loop.batch_size,
            seed=loop.seed,
            rank=context.rank,
            world_size=context.world_size,
        )
        self.steps_per_epoch = len(self.sampler) // loop.grad_accum_steps
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"an epoch has {len(self.sampler)} batch(es) per process, fewer than "
                f"loop.grad_accum_steps={loop.grad_accum_steps}: no optimizer step would happen"
            )
        total = loop.epochs * self.steps_per_epoch
        self.total_steps = min(total, loop.max_steps) if loop.max_steps is not None else total
        if self.total_steps < 1:
            raise ValueError(f"the run has no optimizer step (loop.epochs={loop.epochs})")
        self.schedule = InverseSqrtSchedule(
            warmup_steps=config.schedule.warmup_steps,
            cooldown_steps=config.schedule.cooldown_steps,
            timescale=config.schedule.timescale,
            total_steps=self.total_steps,
        )

        # Counters; overwritten by a resumed checkpoint.
        self.step = 0  # optimizer steps completed
        self.epoch = 0  # epochs completed
        self.step_in_epoch = 0
        self.skipped_steps = 0
        self.consecutive_nonfinite = 0
        self.best_value: float | None = None
        self.last_val: dict[str, float] | None = None
        self._resume_rng: dict[str, Any] | None = None
        self._stop = threading.Event()

        module = parts.model
        state = None
        if resume:
            checkpoint = self.run_dir / "checkpoints" / "last"
            model_state, state, _ = load_checkpoint(checkpoint)
            load_model_state(module, model_state, checkpoint)
            self._restore_counters(state, checkpoint)
        module.to(context.device)
        self.module = module
        self.model: nn.Module = module
        if context.is_distributed:
            device_ids = [context.device.index] if context.device.type == "cuda" else None
            self.model = DistributedDataParallel(
                module, device_ids=device_ids, find_unused_parameters=loop.find_unused_parameters
            )
        groups = build_param_groups(
            module.named_parameters(),
            parts.role_of,
            no_weight_decay_names(module),
            config.optim,
            parts.num_vit_blocks,
        )
        self.trainable = [p for group in groups for p in group["params"]]
        self.optimizer = build_optimizer(groups, config.optim)
        if state is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        self.log = None
        if context.is_main:
            self.log = MetricsLog(self.run_dir, resume_step=self.step if resume else None)

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
        last_record: dict[str, Any] = {}
        status: Literal["completed", "interrupted"] = "completed"
        with self._stop_on_signals():
            while self.step < self.total_steps:
                last_record, stopped = self._run_epoch(on_step_end, last_record)
                if stopped:
                    status = "interrupted"
                    break
        if status == "completed" and self.log is not None:
            curve = plot_loss_curve(read_metrics(self.log.path), self.run_dir / "loss_curve.png")
        else:
            curve = None
        if self.log is not None:
            self.log.close()
        best = self.run_dir / "checkpoints" / "best"
        return RunResult(
            run_dir=self.run_dir,
            status=status,
            steps=self.step,
            total_steps=self.total_steps,
            epochs=self.epoch,
            skipped_steps=self.skipped_steps,
            last_train={k: v for k, v in last_record.items() if isinstance(v, (int, float))},
            last_val=self.last_val,
            best_value=self.best_value,
            checkpoint=self.run_dir / "checkpoints" / "last",
            best_checkpoint=best if best.exists() else None,
            loss_curve=curve,
        )

    def _run_epoch(
        self, on_step_end: Callable[[dict[str, Any]], None] | None, last_record: dict[str, Any]
    ) -> tuple[dict[str, Any], bool]:
        """Steps of the current epoch from the current position, then validation and checkpoints.
        Returns the last record and whether a stop was requested."""
        loop = self.config.loop
        accum = loop.grad_accum_steps
        epoch = self.epoch
        self.sampler.set_epoch(epoch, self.step_in_epoch * accum)
        set_epoch = getattr(self.parts.train_dataset, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(epoch)
        loader = self._loader(
            self.parts.train_dataset, self.sampler, self.parts.collate_fn, seed=loop.seed * 100_003 + epoch
        )
        steps_here = min(self.steps_per_epoch, self.step_in_epoch + self.total_steps - self.step)
        window: dict[str, deque] = {}
        bar = tqdm(
            total=steps_here,
            initial=self.step_in_epoch,
            desc=f"epoch {epoch + 1}/{math.ceil(self.total_steps / self.steps_per_epoch)}",
            disable=not self.context.is_main,
            leave=self.steps_per_epoch >= _KEEP_EPOCH_BAR_STEPS,
            dynamic_ncols=True,
        )
        batches = iter(loader)
        stopped = False
        try:
            while self.step_in_epoch < steps_here:
                started = time.perf_counter()
                micro_batches = [next(batches) for _ in range(accum)]
                record, stop_flag = self.train_step(micro_batches)
                self.step += 1
                self.step_in_epoch += 1
                record = {"kind": "train", "step": self.step, "epoch": epoch + 1, **record}
                record["seconds"] = time.perf_counter() - started
                if self.log is not None:
                    self.log.write(record)
                _update_bar(bar, window, record)
                last_record = record
                if on_step_end is not None:
                    on_step_end(record)
                if self.consecutive_nonfinite >= loop.max_consecutive_nonfinite:
                    self._diverged()
                if stop_flag or self._any_stop_requested():
                    stopped = True
                    break
                every = loop.checkpoint_every_steps
                if every and self.step % every == 0 and self.step_in_epoch < steps_here:
                    self._save("last")
        finally:
            bar.close()
            del batches
        if stopped and self.step_in_epoch < steps_here:
            self._save("last")
            return last_record, True
        if self.step_in_epoch == self.steps_per_epoch:
            self.epoch += 1
            self.step_in_epoch = 0
        every_val = self.config.val.every_epochs
        run_done = self.step >= self.total_steps
        improved = False
        if self.parts.val_dataset is not None and every_val > 0:
            epoch_end = self.step_in_epoch == 0
            if run_done or (epoch_end and self.epoch % every_val == 0):
                improved = self._validate()
        every_ckpt = loop.checkpoint_every_epochs
        epoch_due = self.step_in_epoch == 0 and every_ckpt > 0 and self.epoch % every_ckpt == 0
        if run_done or stopped or improved or epoch_due:
            self._save("last")
        if improved:
            self._save("best")
        return last_record, stopped and not run_done

    # ---------------------------------------------------------------------------------------- step
    def train_step(self, micro_batches: list[Any]) -> tuple[dict[str, Any], bool]:
        """One optimizer step at the current step's learning rate over ``micro_batches`` (gradient
        accumulation, clipping, NaN/inf skip); returns (log record, stop requested on any process).
        The loop calls it; it does not advance ``step`` (benchmarks call it directly)."""
        factor = self.schedule.factor(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor
        self.model.train()
        totals: dict[str, torch.Tensor] = {}
        count = len(micro_batches)
        for index, batch in enumerate(micro_batches):
            batch = _to_device(batch, self.context.device)
            last = index == count - 1
            sync = nullcontext() if last or not self.context.is_distributed else self.model.no_sync()
            with sync:
                losses = self._losses(self.model, batch, self.parts.criterion)
                (losses["loss"] / count).backward()
            for key, value in losses.items():
                totals[key] = totals.get(key, 0.0) + torch.as_tensor(value).detach().float() / count
        max_norm = self.config.optim.grad_clip_norm
        grad_norm = torch.nn.utils.clip_grad_norm_(
            self.trainable, max_norm=max_norm if max_norm is not None else math.inf
        )
        keys = sorted(totals)
        local_bad = not (torch.isfinite(totals["loss"]) and torch.isfinite(grad_norm))
        flags = torch.tensor([float(local_bad), float(self._stop.is_set())])
        reduced = all_reduce_sum(
            torch.cat([torch.stack([totals[k] for k in keys]).cpu(), flags]).to(self.context.device),
            self.context,
        ).cpu()
        means = reduced[: len(keys)] / self.context.world_size
        nonfinite, stop = bool(reduced[-2] > 0), bool(reduced[-1] > 0)
        if nonfinite:
            self.skipped_steps += 1
            self.consecutive_nonfinite += 1
        else:
            self.optimizer.step()
            self.consecutive_nonfinite = 0
        self.optimizer.zero_grad(set_to_none=True)
        record: dict[str, Any] = {key: float(value) for key, value in zip(keys, means, strict=True)}
        record.update(
            grad_norm=float(grad_norm),
            lr_factor=factor,
            lr_transformer=self.config.optim.lr_transformer * factor,
            skipped=nonfinite,
        )
        return record, stop

    def _losses(self, model: nn.Module, batch: Any, criterion: Criterion) -> dict[str, torch.Tensor]:
        """The criterion's dict for ``batch``. Non-finite model outputs (a diverging model) are zeroed so
        that the criterion still runs (its collectives stay in step across processes) and the total is
        set to NaN, which makes the step a skipped one."""
        with self._autocast():
            outputs = model(
                pixel_values=batch.pixel_values,
                image_index=batch.image_index,
                input_ids=batch.input_ids,
                attention_mask=batch.attention_mask,
            )
        outputs = _to_float32(outputs)
        finite = _all_finite(outputs)
        if not finite:
            outputs = _zero_nonfinite(outputs)
        losses = criterion(outputs, batch.targets)
        if not finite:
            losses = {**losses, "loss": losses["loss"] * float("nan")}
        return losses

    def _autocast(self):
        device_type = self.context.device.type
        if trains_in_bf16(self.config.loop.amp, device_type):
            return torch.autocast(device_type=device_type, dtype=torch.bfloat16)
        return nullcontext()

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
            for batch in tqdm(loader, desc="validation", disable=not context.is_main, leave=False):
                losses = self._losses(self.module, _to_device(batch, context.device), criterion)
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
            raise KeyError(
                f"val.best_metric {metric!r} is not among the validation results {sorted(results)}"
            )
        value = results[metric]
        better = self.best_value is None or (
            value < self.best_value if self.config.val.best_mode == "min" else value > self.best_value
        )
        if better and math.isfinite(value):
            self.best_value = value
        improved = better and math.isfinite(value)
        self.last_val = results
        if self.log is not None:
            self.log.write({"kind": "val", "step": self.step, "epoch": self.epoch, **results})
            tqdm.write(
                f"validation after step {self.step}: "
                + ", ".join(f"{k}={v:.4g}" for k, v in results.items() if "_aux_" not in k and "o2m" not in k)
            )
        return improved

    # -------------------------------------------------------------------------------- checkpoints
    def _save(self, name: str) -> Path:
        """Write checkpoint ``name`` (all processes take part; rank 0 writes)."""
        rng_states = gather_objects(capture_rng_state(), self.context)
        path = self.run_dir / "checkpoints" / name
        if self.context.is_main:
            training_state = {
                "format": _CHECKPOINT_FORMAT,
                "step": self.step,
                "epoch": self.epoch,
                "step_in_epoch": self.step_in_epoch,
                "steps_per_epoch": self.steps_per_epoch,
                "world_size": self.context.world_size,
                "optimizer": self.optimizer.state_dict(),
                "rng": rng_states,
                "skipped_steps": self.skipped_steps,
                "consecutive_nonfinite": self.consecutive_nonfinite,
                "best_value": self.best_value,
            }
            meta = {
                "step": self.step,
                "epoch": self.epoch,
                "step_in_epoch": self.step_in_epoch,
                "total_steps": self.total_steps,
                "best_metric": self.config.val.best_metric,
                "best_value": self.best_value,
                "last_val": self.last_val,
            }
            save_checkpoint(path, model_state_to_save(self.module), training_state, meta)
        barrier(self.context)
        return path

    def _restore_counters(self, state: dict[str, Any], where: Path) -> None:
        if state.get("format") != _CHECKPOINT_FORMAT:
            raise ValueError(
                f"checkpoint {where} has format {state.get('format')}, expected {_CHECKPOINT_FORMAT}"
            )
        if state["world_size"] != self.context.world_size:
            raise ValueError(
                f"checkpoint {where} was written by a run of {state['world_size']} process(es); resume it "
                f"with the same number (this run has {self.context.world_size}): the data order and RNG "
                "streams are per process"
            )
        if state["steps_per_epoch"] != self.steps_per_epoch:
            raise ValueError(
                f"checkpoint {where} was written with {state['steps_per_epoch']} steps per epoch, this "
                f"configuration gives {self.steps_per_epoch}: the dataset, batch size or accumulation changed"
            )
        self.step = state["step"]
        self.epoch = state["epoch"]
        self.step_in_epoch = state["step_in_epoch"]
        self.skipped_steps = state["skipped_steps"]
        self.consecutive_nonfinite = state["consecutive_nonfinite"]
        self.best_value = state["best_value"]
        self._resume_rng = state["rng"][self.context.rank]

    def _diverged(self) -> None:
        path = self._save("last")
        count = self.consecutive_nonfinite
        raise TrainingDivergedError(
            f"the loss or its gradient was NaN/inf for {count} optimizer steps in a row (steps "
            f"{self.step - count + 1}-{self.step}; {self.skipped_steps} skipped in all), so training "
            f"stopped. The run is saved in {path} (skipped steps left the weights unchanged). Usual "
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


def _seed_all(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _to_device(obj: Any, device: torch.device) -> Any:
    """``obj`` (tensor, dataclass, dict, list, tuple, nested) with every tensor on ``device``."""
    if device.type == "cpu":
        return obj
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        fields = {f.name: _to_device(getattr(obj, f.name), device) for f in dataclasses.fields(obj) if f.init}
        return dataclasses.replace(obj, **fields)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_device(v, device) for v in obj)
    return obj


def _to_float32(obj: Any) -> Any:
    """Model outputs with every floating tensor in float32 (the loss runs outside autocast)."""
    if isinstance(obj, torch.Tensor):
        return obj.float() if obj.is_floating_point() else obj
    if isinstance(obj, dict):
        return {k: _to_float32(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_float32(v) for v in obj)
    return obj


def _all_finite(obj: Any) -> bool:
    """Whether every floating tensor in ``obj`` (nested dicts/lists) is finite."""
    if isinstance(obj, torch.Tensor):
        return not obj.is_floating_point() or bool(torch.isfinite(obj).all())
    if isinstance(obj, dict):
        return all(_all_finite(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return all(_all_finite(v) for v in obj)
    return True


def _zero_nonfinite(obj: Any) -> Any:
    """``obj`` with NaN and inf replaced by 0 in every floating tensor."""
    if isinstance(obj, torch.Tensor):
        return torch.nan_to_num(obj, nan=0.0, posinf=0.0, neginf=0.0) if obj.is_floating_point() else obj
    if isinstance(obj, dict):
        return {k: _zero_nonfinite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_zero_nonfinite(v) for v in obj)
    return obj


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
