"""Greedy non-maximum suppression on boxes, in plain torch (torchvision is not a dependency)."""

from __future__ import annotations

import torch


def _areas_and_intersection(
    a: torch.Tensor, b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Areas ``(N,)``, ``(M,)`` and pairwise intersections ``(N, M)`` of xyxy boxes."""
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    top_left = torch.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    return area_a, area_b, (bottom_right - top_left).clamp(min=0).prod(dim=-1)


def box_iou_xyxy(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of ``(N, 4)`` and ``(M, 4)`` xyxy boxes -> ``(N, M)``; empty boxes give IoU 0."""
    area_a, area_b, inter = _areas_and_intersection(a, b)
    union = area_a[:, None] + area_b[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=torch.finfo(a.dtype).tiny), torch.zeros_like(inter))


def box_ios_xyxy(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise intersection over the smaller box of ``(N, 4)`` and ``(M, 4)`` xyxy boxes -> ``(N, M)``
    (1 when one box holds the other); empty boxes give 0."""
    area_a, area_b, inter = _areas_and_intersection(a, b)
    smaller = torch.minimum(area_a[:, None], area_b[None, :])
    return torch.where(
        smaller > 0, inter / smaller.clamp(min=torch.finfo(a.dtype).tiny), torch.zeros_like(inter)
    )


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Indices of the boxes kept by greedy NMS, highest score first.

    Args:
        boxes: ``(N, 4)`` xyxy boxes (any consistent unit).
        scores: ``(N,)`` scores.
        iou_threshold: a box is dropped when its IoU with a kept, higher-scoring box is > this.

    Returns:
        ``(K,)`` int64 indices into ``boxes``, in decreasing score order.
    """
    order = torch.argsort(scores, descending=True, stable=True)
    overlaps = (box_iou_xyxy(boxes[order], boxes[order]) > iou_threshold).cpu()
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= overlaps[i]
    return order[torch.tensor(keep, dtype=torch.long, device=boxes.device)]
