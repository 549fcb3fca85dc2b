"""Assignment of predictions to ground truth: one-to-one (Hungarian) and one-to-many (DAC top-k).

A :class:`Matching` lists pairs ``k``: prediction ``[batch_idx[k], query_idx[k]]`` is assigned to the GT with
global packed index ``target_idx[k]`` (see :mod:`sam3tune.loss.targets`). Matching never carries gradient.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from sam3tune.loss.box_ops import box_cxcywh_to_xyxy, pairwise_box_iou, pairwise_generalized_box_iou
from sam3tune.loss.targets import PackedTargets


class Matching(NamedTuple):
    """``K`` (prediction, GT) pairs; three ``(K,)`` int64 tensors."""

    batch_idx: Tensor
    query_idx: Tensor
    target_idx: Tensor

    @staticmethod
    def empty(device: torch.device) -> Matching:
        none = torch.zeros(0, dtype=torch.int64, device=device)
        return Matching(none, none, none)


class HungarianMatcher:
    """One-to-one matching minimising ``cost_bbox * L1 + cost_class * focal - cost_giou * GIoU``.

    L1 is summed over the cxcywh coordinates, GIoU is on xyxy, and the focal class cost of a prediction
    with logit ``x`` and ``p = sigmoid(x)`` is ``alpha (1-p)^gamma (-log p) - (1-alpha) p^gamma (-log(1-p))``
    (the same for every GT). Queries without GT get no pair; with fewer predictions than GT only ``Q`` GT
    are matched. Pairs are listed query by query, by increasing GT index.
    """

    def __init__(
        self,
        cost_class: float = 2.0,
        cost_bbox: float = 5.0,
        cost_giou: float = 2.0,
        alpha: float = 0.25,
        gamma: float = 2.0,
    ) -> None:
        self.cost_class = cost_class
        self.cost_bbox = cost_bbox
        self.cost_giou = cost_giou
        self.alpha = alpha
        self.gamma = gamma

    @torch.no_grad()
    def __call__(self, logits: Tensor, boxes: Tensor, targets: PackedTargets) -> Matching:
        """Match one layer: ``logits`` ``(B, Q)``, ``boxes`` ``(B, Q, 4)`` cxcywh."""
        return self.match_layers(logits[None], boxes[None], targets)[0]

    @torch.no_grad()
    def match_layers(self, logits: Tensor, boxes: Tensor, targets: PackedTargets) -> list[Matching]:
        """Match ``L`` layers independently: ``logits`` ``(L, B, Q)``, ``boxes`` ``(L, B, Q, 4)``."""
        num_layers, device = logits.shape[0], logits.device
        rows = [b for b, n in enumerate(targets.counts) if n > 0]
        if not rows:
            return [Matching.empty(device) for _ in range(num_layers)]
        cost = self.cost_matrices(logits[:, rows], boxes[:, rows], targets.padded_boxes[rows])
        cost = cost.cpu().numpy()
        offsets = targets.offsets.tolist()

        matchings = []
        for layer in range(num_layers):
            batch_idx, query_idx, target_idx = [], [], []
            for r, b in enumerate(rows):
                n = targets.counts[b]
                queries, gts = linear_sum_assignment(cost[layer, r, :, :n])
                order = np.argsort(gts)
                query_idx.append(queries[order])
                target_idx.append(gts[order] + offsets[b])
                batch_idx.append(np.full(len(order), b))
            matchings.append(
                Matching(
                    *(
                        torch.from_numpy(np.concatenate(a)).to(device)
                        for a in (batch_idx, query_idx, target_idx)
                    )
                )
            )
        return matchings

    def cost_matrices(self, logits: Tensor, boxes: Tensor, gt_boxes: Tensor) -> Tensor:
        """Cost matrices ``(L, R, Q, T)`` of ``logits`` ``(L, R, Q)`` and ``boxes`` ``(L, R, Q, 4)`` against
        ``gt_boxes`` ``(R, T, 4)`` (cxcywh, zero-padded)."""
        num_layers = logits.shape[0]
        l1 = torch.cdist(boxes, gt_boxes.expand(num_layers, *gt_boxes.shape), p=1)
        giou = pairwise_generalized_box_iou(box_cxcywh_to_xyxy(boxes), box_cxcywh_to_xyxy(gt_boxes))
        p = logits.sigmoid()
        positive = self.alpha * (1 - p) ** self.gamma * -F.logsigmoid(logits)
        negative = (1 - self.alpha) * p**self.gamma * -F.logsigmoid(-logits)
        focal = (positive - negative)[..., None]
        return self.cost_bbox * l1 + self.cost_class * focal - self.cost_giou * giou


class OneToManyMatcher:
    """DAC one-to-many matching: each GT takes its top-``topk`` predictions by score, if above ``threshold``.

    Score of prediction ``q`` for GT ``t``: ``alpha * sigmoid(logit_q) + (1 - alpha) * IoU(q, t)``. A
    prediction is a candidate for ``t`` when its score is strictly above the linearly interpolated
    ``(1 - topk/Q)``-quantile of the ``Q`` scores of ``t`` (for distinct scores: exactly the top ``topk``;
    the level is clamped at 0 when ``Q < topk``), and it is kept when its score is also above
    ``threshold``. A prediction can be matched to several GT. Pairs come in (query, prediction, GT) order.
    """

    def __init__(self, alpha: float = 0.3, threshold: float = 0.4, topk: int = 4) -> None:
        self.alpha = alpha
        self.threshold = threshold
        self.topk = topk

    @torch.no_grad()
    def __call__(self, logits: Tensor, boxes: Tensor, targets: PackedTargets) -> Matching:
        """Match one layer: ``logits`` ``(B, Q)``, ``boxes`` ``(B, Q, 4)`` cxcywh."""
        if targets.padded_boxes.shape[1] == 0:
            return Matching.empty(logits.device)
        iou, _ = pairwise_box_iou(box_cxcywh_to_xyxy(boxes), box_cxcywh_to_xyxy(targets.padded_boxes))
        score = self.alpha * logits.sigmoid()[..., None] + (1 - self.alpha) * iou  # (B, Q, T)
        level = max(1 - self.topk / logits.shape[1], 0.0)
        selected = (score > interpolated_quantile(score, level)) & (score > self.threshold)
        selected &= targets.padded_is_real[:, None, :]
        batch_idx, query_idx, slot = selected.nonzero(as_tuple=True)
        return Matching(batch_idx, query_idx, targets.offsets[batch_idx] + slot)


def interpolated_quantile(values: Tensor, level: float) -> Tensor:
    """``torch.quantile(values, level, dim=1, keepdim=True)`` (linear interpolation), bit for bit.

    ``values`` ``(B, Q, T)`` without NaN -> ``(B, 1, T)``. Computed from the top ``Q - floor(rank)`` values
    only instead of a full sort; the rank and the interpolation weight are formed in the dtype of
    ``values`` as ``torch.quantile`` forms them.
    """
    size = values.shape[1]
    rank = torch.tensor(level, dtype=values.dtype) * (size - 1)
    below = int(rank.floor())
    above = int(rank.ceil())
    weight = rank - below
    top = values.topk(size - below, dim=1, largest=True, sorted=True).values  # descending
    value_below = top[:, size - 1 - below : size - below]
    value_above = top[:, size - 1 - above : size - above]
    return torch.lerp(value_below, value_above, weight.to(values.device))
