"""IoU-aware binary classification loss with presence masking, the presence loss and their logged metrics.

All functions take every decoder layer at once: logits ``(L, B, Q)``, one value per layer out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from sam3tune.loss.focal_loss import sigmoid_focal_loss


def iou_aware_soft_target(prob: Tensor, iou: Tensor, alpha: float) -> Tensor:
    """Soft positive target ``max(0.01, p^alpha * IoU^(1-alpha))`` of matched pairs ``(K,)``, no gradient."""
    return (prob.detach() ** alpha * iou.detach() ** (1 - alpha)).clamp(min=0.01)


def positive_map(
    shape: tuple[int, int, int], layer_idx: Tensor, batch_idx: Tensor, query_idx: Tensor
) -> Tensor:
    """``(L, B, Q)`` bool, True at every matched prediction."""
    positive = torch.zeros(shape, dtype=torch.bool, device=layer_idx.device)
    positive[layer_idx, batch_idx, query_idx] = True
    return positive


def iou_aware_bce(
    logits: Tensor,
    positive: Tensor,
    layer_idx: Tensor,
    batch_idx: Tensor,
    query_idx: Tensor,
    soft_target: Tensor,
    supervised_rows: Tensor,
    pos_weight: float = 10.0,
    gamma: float = 2.0,
    pad_n_queries: int | None = 200,
    pad_scale_pos: float = 1.0,
) -> Tensor:
    """Classification loss of each layer, ``(L,)``.

    Per prediction with logit ``x``: ``pos_weight * BCE(x, t)`` if matched (``t`` the soft target of its
    pair; if it is in several pairs, the last pair's), else ``sigmoid(x)^gamma * BCE(x, 0)``; zero in the rows
    where ``supervised_rows`` ``(B,)`` is False; summed and divided by ``B * max(Q, pad_n_queries)``.
    ``positive`` is :func:`positive_map` of the pairs ``layer_idx, batch_idx, query_idx``, ``soft_target``
    ``(K,)``.
    """
    _, batch_size, num_queries = logits.shape
    keep = supervised_rows.to(logits.dtype)

    negative = logits.sigmoid() ** gamma * F.softplus(logits)
    negative = torch.where(positive, 0.0, negative) * keep[:, None]
    loss = negative.sum(dim=(1, 2))

    if layer_idx.numel():
        # One positive term per matched prediction: the last pair listed for it wins.
        flat = (layer_idx * batch_size + batch_idx) * num_queries + query_idx
        unique, inverse = torch.unique(flat, return_inverse=True)
        last = torch.zeros_like(unique).scatter_reduce(
            0, inverse, torch.arange(len(flat), device=flat.device), reduce="amax", include_self=False
        )
        x = logits.flatten()[unique]
        scale = pos_weight * (
            pad_scale_pos if pad_n_queries is not None and num_queries < pad_n_queries else 1.0
        )
        pos = scale * F.binary_cross_entropy_with_logits(x, soft_target[last], reduction="none")
        layer_of_unique = unique // (batch_size * num_queries)
        pos = pos * keep[(unique // num_queries) % batch_size]
        loss = loss.index_add(0, layer_of_unique, pos)

    padded = num_queries if pad_n_queries is None else max(num_queries, pad_n_queries)
    return loss / (batch_size * padded)


@torch.no_grad()
def binary_f1(logits: Tensor, positive: Tensor) -> Tensor:
    """F1 of ``sigmoid(logits) > 0.5`` against ``positive`` over all ``(B, Q)`` of each layer, ``(L,)``.

    0 when there is no true positive.
    """
    predicted = logits.sigmoid() > 0.5
    true_pos = (predicted & positive).sum(dim=(1, 2))
    false_pos = (predicted & ~positive).sum(dim=(1, 2))
    false_neg = (~predicted & positive).sum(dim=(1, 2))
    denominator = (2 * true_pos + false_pos + false_neg).clamp(min=1)
    return (2 * true_pos / denominator).to(logits.dtype)


def presence_loss(presence_logits: Tensor, present: Tensor, alpha: float = 0.5, gamma: float = 0.0) -> Tensor:
    """Focal loss of the presence logits ``(L, B)`` against ``present`` ``(B,)`` bool, mean over B, ``(L,)``.

    The recipe (alpha 0.5, gamma 0) makes it ``0.5 * mean_b BCE(z_b, present_b)``.
    """
    target = present.to(presence_logits.dtype).expand_as(presence_logits)
    return sigmoid_focal_loss(presence_logits, target, alpha, gamma).mean(dim=1)


@torch.no_grad()
def presence_accuracy(presence_logits: Tensor, present: Tensor) -> Tensor:
    """Share of queries whose ``sigmoid(presence) > 0.5`` equals ``present``, per layer ``(L,)``."""
    return ((presence_logits.sigmoid() > 0.5) == present).to(presence_logits.dtype).mean(dim=1)
