"""Device memory of a training step: counted tensor by tensor while the doctor runs one.

:class:`LiveTensorMeter` sees every operator call (a ``TorchDispatchMode``), adds the storage of each new
tensor, rounded up to the CUDA caching allocator's 512-byte blocks, and subtracts it when the storage is
freed; its ``peak`` is what ``torch.cuda.max_memory_allocated`` would add for the same operators. Weights,
gradients and AdamW moments are counted from the model and optimizer; the activation peak (forward, loss,
backward) and the optimizer step's own peak are measured. See ``docs/doctor.md`` for what this leaves out.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

ALLOCATION_BLOCK = 512
"""Bytes: the CUDA caching allocator rounds every allocation up to a multiple of this."""


def block_bytes(nbytes: int) -> int:
    """``nbytes`` rounded up to whole allocator blocks."""
    return -(-nbytes // ALLOCATION_BLOCK) * ALLOCATION_BLOCK


class LiveTensorMeter(TorchDispatchMode):
    """Bytes of tensor storage created while active and still alive (``live``), and their maximum
    (``peak``). Tensors that existed before (weights) are not counted, nor are views and in-place
    results (they share an input's storage)."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._sizes: dict[int, int] = {}

    def reset_peak(self) -> None:
        self.peak = self.live

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        # Views and in-place results alias an input (e.g. a weight's transpose, a parameter updated by the
        # optimizer): no new memory. Everything else an operator returns was allocated by it.
        inputs = {
            t.untyped_storage().data_ptr()
            for t in tree_flatten((args, kwargs))[0]
            if isinstance(t, torch.Tensor) and t.device.type != "meta"
        }
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor) and tensor.device.type != "meta":
                self._track(tensor.untyped_storage(), inputs)
        return out

    def _track(self, storage: torch.UntypedStorage, inputs: set[int]) -> None:
        key = storage.data_ptr()
        if key in self._sizes or key in inputs or storage.nbytes() == 0:
            return
        size = block_bytes(storage.nbytes())
        self._sizes[key] = size
        self.live += size
        self.peak = max(self.peak, self.live)
        weakref.finalize(storage, self._release, key)

    def _release(self, key: int) -> None:
        self.live -= self._sizes.pop(key, 0)


def module_bytes(model: nn.Module) -> int:
    """Bytes of every parameter and buffer of ``model`` (shared storages counted once)."""
    sizes = {}
    for tensor in [*model.parameters(), *model.buffers()]:
        storage = tensor.untyped_storage()
        sizes[storage.data_ptr()] = block_bytes(storage.nbytes())
    return sum(sizes.values())


def gradient_bytes(model: nn.Module) -> int:
    """Bytes of one gradient per trainable parameter (in the parameter's dtype)."""
    return sum(block_bytes(p.numel() * p.element_size()) for p in model.parameters() if p.requires_grad)


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of the tensors an optimizer keeps between steps (AdamW: two moments per parameter)."""
    return sum(
        block_bytes(value.untyped_storage().nbytes())
        for state in optimizer.state.values()
        for key, value in state.items()
        if isinstance(value, torch.Tensor) and key != "step"  # AdamW's step counters live on the host
    )


@dataclass(frozen=True)
class MemoryEstimate:
    """Device memory of one training step, in bytes.

    ``weights``: parameters and buffers as stored. ``gradients``: one per trainable parameter.
    ``optimizer_state``: what the optimizer keeps between steps (measured after one step).
    ``activations``: measured peak of the tensors made by forward, loss and backward (the gradients made
    during backward included). ``optimizer_step``: measured peak during the optimizer step (gradients,
    state, temporaries). ``precision``: how the forward ran; ``device``: where it was measured;
    ``cuda_peak``: ``torch.cuda.max_memory_allocated`` over the step when it ran on CUDA.
    """

    weights: int
    gradients: int
    optimizer_state: int
    activations: int
    optimizer_step: int
    precision: str
    device: str
    cuda_peak: int | None = None

    @property
    def total(self) -> int:
        """Peak of a steady-state step: weights + max(activations + optimizer state, optimizer step)."""
        return self.weights + max(self.activations + self.optimizer_state, self.optimizer_step)

    @property
    def ddp_extra(self) -> int:
        """What DistributedDataParallel adds per GPU: its gradient buckets, one more gradient copy."""
        return self.gradients
