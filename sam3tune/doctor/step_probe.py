"""The trainer's first step on one batch, watched: losses, which trainable parameters got a gradient, the
gradient norm, and the device memory the step took.

The step is the trainer's own (``sam3tune.train.loop``): :func:`~sam3tune.train.loop.forward_and_loss`
at the precision training would use, backward, clipping at ``optim.grad_clip_norm``, the AdamW step,
gradients released; the doctor only wraps it in its memory meter and looks at the outputs' shapes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_map_only

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
from sam3tune.train.loop import forward_and_loss


@dataclass
class StepProbe:
    """What one step showed. ``outputs``: the model's outputs as meta tensors (keys, shapes, dtypes: no
    memory held); ``result``: the criterion's (detached); ``no_gradient``: per component, the trainable
    parameters that got no gradient; ``grad_norm``: the global gradient norm before clipping;
    ``memory``: None when no step was taken (nothing trains)."""

    outputs: dict[str, Any]
    result: dict[str, Tensor]
    no_gradient: dict[str, list[str]]
    grad_norm: float | None
    memory: MemoryEstimate | None


def probe_training_step(
    model: nn.Module,
    criterion: Sam3Criterion,
    batch: Batch,
    optimizer: torch.optim.Optimizer | None,
    *,
    bf16: bool,
    max_grad_norm: float | None = None,
) -> StepProbe:
    """Run the trainer's step of ``model`` (train mode) on ``batch`` (moved to the model's device),
    measuring memory throughout; no backward and no step when ``optimizer`` is None.

    ``bf16``: the forward under bfloat16 autocast (``sam3tune.train.loop.uses_bf16`` decides it as the
    trainer does). The weights change (one AdamW step): use a model built for the diagnosis. The
    criterion's ``ValueError`` (malformed targets or outputs) propagates.
    """
    device = next(model.parameters()).device
    batch = batch.to(device)
    model.train()
    on_cuda = device.type == "cuda"
    if on_cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    shapes: list[dict[str, Any]] = []
    hook = model.register_forward_hook(lambda m, a, out: shapes.append(tree_map_only(Tensor, _meta, out)))
    meter = LiveTensorMeter()
    try:
        with meter:
            result = forward_and_loss(model, batch, criterion, bf16)
            trains = optimizer is not None and result["loss"].requires_grad
            if trains:
                result["loss"].backward()
    finally:
        hook.remove()
    activations = meter.peak
    result = tree_map_only(Tensor, Tensor.detach, result)
    no_gradient: dict[str, list[str]] = {}
    for name, param in model.named_parameters():
        if param.requires_grad and param.grad is None:
            no_gradient.setdefault(component_of(name), []).append(name)
    if not trains:
        return StepProbe(shapes[0], result, no_gradient, None, None)

    gradients = gradient_bytes(model)
    grad_norm, step_peak = _clip_and_step(optimizer, max_grad_norm, meter)
    cuda_peak = None
    if on_cuda:
        torch.cuda.synchronize(device)
        cuda_peak = int(torch.cuda.max_memory_allocated(device))
    memory = MemoryEstimate(
        weights=module_bytes(model),
        gradients=gradients,
        optimizer_state=optimizer_state_bytes(optimizer),
        activations=activations,
        optimizer_step=gradients + step_peak,
        precision="bf16 autocast" if bf16 else str(next(model.parameters()).dtype).removeprefix("torch."),
        device=str(device),
        cuda_peak=cuda_peak,
    )
    return StepProbe(shapes[0], result, no_gradient, grad_norm, memory)


def _clip_and_step(
    optimizer: torch.optim.Optimizer, max_grad_norm: float | None, meter: LiveTensorMeter
) -> tuple[float, int]:
    """The trainer's clipping and AdamW step, then gradients released: the gradient norm before clipping
    and the memory the step added on top of what was alive before it."""
    before = meter.live
    meter.reset_peak()
    with meter:
        trainable = [p for group in optimizer.param_groups for p in group["params"]]
        limit = max_grad_norm if max_grad_norm is not None else math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(trainable, max_norm=limit))
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return grad_norm, meter.peak - before


def _meta(tensor: Tensor) -> Tensor:
    """A tensor of ``tensor``'s shape and dtype that holds no memory."""
    return torch.empty(tensor.shape, dtype=tensor.dtype, device="meta")
