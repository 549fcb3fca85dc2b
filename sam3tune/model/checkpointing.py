"""Activation checkpointing for SAM 3: ViT and CLIP layers (HF's own per-layer switch) plus the DETR
encoder/decoder layers and the mask decoder, which ``Sam3ForTraining`` runs itself.

Non-reentrant ``torch.utils.checkpoint`` throughout: it restores the RNG state on recomputation (same
dropout masks, so gradients equal those without checkpointing) and works with frozen inputs and peft.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers.modeling_layers import GradientCheckpointingLayer


def set_encoder_checkpointing(model: nn.Module, enabled: bool) -> int:
    """Switch checkpointing of every ViT and CLIP layer in ``model``; returns how many layers it touched.

    ``Sam3Model`` refuses ``gradient_checkpointing_enable`` (it declares no support), but its ViT and CLIP
    layers are HF ``GradientCheckpointingLayer``s, so their flag is set directly.
    """
    layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    for layer in layers:
        layer.gradient_checkpointing = enabled
        layer._gradient_checkpointing_func = partial(checkpoint, use_reentrant=False)
    return len(layers)


def run_maybe_checkpointed(enabled: bool, function: Callable[..., Any], *args: Any) -> Any:
    """``function(*args)``, recomputed in backward instead of storing activations when ``enabled``
    and gradients are being recorded."""
    if enabled and torch.is_grad_enabled():
        return checkpoint(function, *args, use_reentrant=False)
    return function(*args)
