"""Sigmoid focal loss (RetinaNet), element-wise, for soft or hard targets."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def sigmoid_focal_loss(logits: Tensor, targets: Tensor, alpha: float, gamma: float) -> Tensor:
    """``alpha_t * (1 - p_t)^gamma * BCE(logits, targets)`` element-wise (same shape as ``logits``).

    ``p = sigmoid(logits)``, ``p_t = p y + (1-p)(1-y)``, ``alpha_t = alpha y + (1-alpha)(1-y)``; ``targets``
    in [0, 1]. ``gamma = 0`` leaves out the modulating factor (``0^0 = 1``).
    """
    loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    if gamma != 0:
        p = logits.sigmoid()
        p_t = p * targets + (1 - p) * (1 - targets)
        loss = loss * (1 - p_t) ** gamma
    return (alpha * targets + (1 - alpha) * (1 - targets)) * loss
