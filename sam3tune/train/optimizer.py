"""The optimizer over the recipe's parameter groups: AdamW (official), or bitsandbytes' 8-bit AdamW, whose
two moments take 2 bytes per trained parameter instead of 8 (``optim.optimizer``; ``sam3tune[qlora]``)."""

from __future__ import annotations

import torch

from sam3tune.model.quantization import require_bitsandbytes
from sam3tune.train.config import OptimConfig


def build_optimizer(groups: list[dict], optim: OptimConfig) -> torch.optim.Optimizer:
    """``optim.optimizer`` over ``groups`` (from ``build_param_groups``) with ``optim``'s betas and eps."""
    kwargs = {"betas": tuple(optim.betas), "eps": optim.eps, "lr": optim.lr_transformer}
    if optim.optimizer == "adamw":
        return torch.optim.AdamW(groups, **kwargs)
    if optim.optimizer == "adamw8bit":
        bnb = require_bitsandbytes("optim.optimizer=adamw8bit")
        return bnb.optim.AdamW8bit(groups, **kwargs)
    raise ValueError(f"optim.optimizer must be 'adamw' or 'adamw8bit', got {optim.optimizer!r}")
