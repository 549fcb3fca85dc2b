"""One training step on one batch, watched: losses, which trainable parameters got a gradient, the
gradient norm, and the device memory the step took.

The step is the trainer's (``sam3tune.train.loop``): forward under bf16 autocast when training would use
it, outputs upcast to float32, criterion, backward, gradient clipping, AdamW step, gradients released.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from sam3tune.data import Batch
from sam3tune.doctor.memory import (
    LiveTensorMeter,
    MemoryEstimate,
    gradient_bytes,
    module_bytes,
    optimizer_state_bytes,
)
from sam3tune.loss import Sam3Criterion
from sam3tune.model import component_of


@dataclass
class StepProbe:
    """What one step showed. ``outputs`` / ``result``: the model's and the criterion's (detached);
    ``no_gradient``: per component, the trainable parameters that got no gradient; ``grad_norm``: the
    global gradient norm before clipping; ``memory``: None when no step was taken (nothing trains)."""

    outputs: dict[str, Any]
    result: dict[str, Tensor]
    no_gradient: dict[str, list[str]]
    grad_norm: float | None
    memory: MemoryEstimate | None


def _map_tensors(value: Any, fn) -> Any:
    if isinstance(value, Tensor):
        return fn(value)
    if isinstance(value, dict):
        return {k: _map_tensors(v, fn) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_map_tensors(v, fn) for v in value)
    return value


def probe_training_step(
    model: nn.Module,
    criterion: Sam3Criterion,
    batch: Batch,
    optimizer: torch.optim.Optimizer | None,
    *,
    bf16: bool,
    max_grad_norm: float | None = None,
) -> StepProbe:
    """Run one training step of ``model`` (train mode) on ``batch`` (moved to the model's device),
    measuring memory throughout; no backward and no step when ``optimizer`` is None.

    ``bf16``: forward under bfloat16 autocast. The weights change (one AdamW step): use a model built for
    the diagnosis. The criterion's ``ValueError`` (malformed targets or outputs) propagates.
    """
    device = next(model.parameters()).device
    batch = batch.to(device)
    model.train()
    on_cuda = device.type == "cuda"
    if on_cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
    meter = LiveTensorMeter()
    with meter:
        with autocast:
            outputs = model(**batch.model_inputs())
        outputs = _map_tensors(outputs, lambda t: t.float() if t.is_floating_point() else t)
        result = criterion(outputs, batch.targets)
        trains = optimizer is not None and result["loss"].requires_grad
        if trains:
            result["loss"].backward()
    activations = meter.peak
    outputs, result = _map_tensors(outputs, Tensor.detach), _map_tensors(result, Tensor.detach)
    no_gradient: dict[str, list[str]] = {}
    for name, param in model.named_parameters():
        if param.requires_grad and param.grad is None:
            no_gradient.setdefault(component_of(name), []).append(name)
    if not trains:
        return StepProbe(outputs, result, no_gradient, None, None)

    gradients = gradient_bytes(model)
    before_step = meter.live
    meter.reset_peak()
    with meter:
        trainable = [p for group in optimizer.param_groups for p in group["params"]]
        limit = max_grad_norm if max_grad_norm is not None else math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(trainable, max_norm=limit))
        optimizer.step()
    step_peak = gradients + meter.peak - before_step
    optimizer.zero_grad(set_to_none=True)
    cuda_peak = None
    if on_cuda:
        torch.cuda.synchronize(device)
        cuda_peak = int(torch.cuda.max_memory_allocated(device))
    memory = MemoryEstimate(
        weights=module_bytes(model),
        gradients=gradients,
        optimizer_state=optimizer_state_bytes(optimizer),
        activations=activations,
        optimizer_step=step_peak,
        precision="bf16 autocast" if bf16 else str(next(model.parameters()).dtype).removeprefix("torch."),
        device=str(device),
        cuda_peak=cuda_peak,
    )
    return StepProbe(outputs, result, no_gradient, grad_norm, memory)
