"""The starting model as a teacher for distillation, without a gradient.

- LoRA (``Sam3ForTraining.sam3`` is a ``PeftModel``): the training network itself with every adapter (and
  every fully trained head copy, peft's ``modules_to_save``) disabled, which *is* the starting model:
  no second copy of the weights. (With an NF4-quantised base it is that quantised base.)
- Full fine-tuning: the weights move, so the teacher is a frozen copy taken before the first step; it
  costs one more copy of the weights (in ``frozen_dtype``), which the memory ladder counts
  (``sam3tune.train.memory_ladder``).

The teacher always runs in eval mode (no dropout, no one-to-many branch) under ``torch.no_grad``, and
must run before the student's forward of the same step, so that no autograd graph exists while the
adapters are switched off and on.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import torch
from peft import PeftModel
from torch import Tensor

from sam3tune.model.training_model import Sam3ForTraining


class Teacher:
    """``teacher(**model_inputs) -> outputs`` of the starting model (the outputs dict of
    ``Sam3ForTraining.forward`` in eval mode)."""

    def __init__(self, model: Sam3ForTraining, frozen_dtype: torch.dtype = torch.float32):
        """``model``: the training model before its first step. LoRA: kept by reference (adapters disabled
        when asked); otherwise copied and frozen (``frozen_dtype``)."""
        self.uses_adapters = isinstance(model.sam3, PeftModel)
        if self.uses_adapters:
            self.model = model
        else:
            self.model = copy.deepcopy(model).requires_grad_(False).eval()
            if frozen_dtype != torch.float32:
                self.model.to(frozen_dtype)

    @property
    def extra_bytes(self) -> int:
        """Memory the teacher adds to training: 0 under LoRA, the frozen copy's weights otherwise."""
        if self.uses_adapters:
            return 0
        return sum(t.numel() * t.element_size() for t in [*self.model.parameters(), *self.model.buffers()])

    def to(self, device: torch.device | str) -> Teacher:
        if not self.uses_adapters:
            self.model.to(device)
        return self

    @torch.no_grad()
    def __call__(self, **inputs: Tensor | None) -> dict:
        with self._as_starting_model():
            return self.model(**inputs)

    @contextmanager
    def _as_starting_model(self) -> Iterator[None]:
        """Eval mode, and under LoRA the adapters off, for the block; the model's mode back after."""
        was_training = self.model.training
        self.model.eval()
        disabled = self.model.sam3.disable_adapter() if self.uses_adapters else nullcontext()
        try:
            with disabled:
                yield
        finally:
            self.model.train(was_training)
