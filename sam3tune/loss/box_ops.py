"""Box conversions and (generalised) IoU, pairwise and elementwise.

Boxes are ``cxcywh`` (centre x, centre y, width, height) or ``xyxy`` (x0, y0, x1, y1), normalised by the
image size. No epsilon anywhere and no clamping of the boxes themselves: a degenerate pair (both boxes of
zero area) gives NaN, as in the official recipe.
"""

from __future__ import annotations

import torch
from torch import Tensor


def box_cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """``(..., 4)`` cxcywh -> ``(..., 4)`` xyxy (differentiable)."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack((cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h), dim=-1)


def box_xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """``(..., 4)`` xyxy -> ``(..., 4)`` cxcywh (differentiable)."""
    x0, y0, x1, y1 = boxes.unbind(-1)
    return torch.stack(((x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0), dim=-1)


def box_area(boxes_xyxy: Tensor) -> Tensor:
    """``(..., 4)`` xyxy -> ``(...)`` area ``(x1 - x0) * (y1 - y0)`` (not clamped)."""
    return (boxes_xyxy[..., 2] - boxes_xyxy[..., 0]) * (boxes_xyxy[..., 3] - boxes_xyxy[..., 1])


def pairwise_box_iou(boxes1: Tensor, boxes2: Tensor) -> tuple[Tensor, Tensor]:
    """IoU and union of every pair: xyxy ``(..., N, 4)`` x ``(..., M, 4)`` -> two ``(..., N, M)``.

    Leading dimensions broadcast.
    """
    area1 = box_area(boxes1)
    area2 = box_area(boxes2)
    top_left = torch.maximum(boxes1[..., :, None, :2], boxes2[..., None, :, :2])
    bottom_right = torch.minimum(boxes1[..., :, None, 2:], boxes2[..., None, :, 2:])
    wh = (bottom_right - top_left).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area1[..., :, None] + area2[..., None, :] - inter
    return inter / union, union


def pairwise_generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """GIoU of every pair: xyxy ``(..., N, 4)`` x ``(..., M, 4)`` -> ``(..., N, M)`` in [-1, 1]."""
    iou, union = pairwise_box_iou(boxes1, boxes2)
    top_left = torch.minimum(boxes1[..., :, None, :2], boxes2[..., None, :, :2])
    bottom_right = torch.maximum(boxes1[..., :, None, 2:], boxes2[..., None, :, 2:])
    wh = (bottom_right - top_left).clamp(min=0)
    enclosing = wh[..., 0] * wh[..., 1]
    return iou - (enclosing - union) / enclosing


def elementwise_box_iou(boxes1: Tensor, boxes2: Tensor) -> tuple[Tensor, Tensor]:
    """IoU and GIoU of matching rows: xyxy ``(K, 4)`` and ``(K, 4)`` -> two ``(K,)``."""
    if boxes1.shape != boxes2.shape:
        raise ValueError(f"elementwise IoU needs boxes of equal shape, got {boxes1.shape} and {boxes2.shape}")
    area1 = box_area(boxes1)
    area2 = box_area(boxes2)
    inter_wh = torch.minimum(boxes1[..., 2:], boxes2[..., 2:]) - torch.maximum(
        boxes1[..., :2], boxes2[..., :2]
    )
    inter = inter_wh.clamp(min=0).prod(-1)
    union = area1 + area2 - inter
    iou = inter / union
    enclosing_wh = torch.maximum(boxes1[..., 2:], boxes2[..., 2:]) - torch.minimum(
        boxes1[..., :2], boxes2[..., :2]
    )
    enclosing = enclosing_wh.clamp(min=0).prod(-1)
    return iou, iou - (enclosing - union) / enclosing
