"""Box regression terms of matched pairs: L1 on cxcywh and 1 - GIoU on xyxy."""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

from sam3tune.loss.box_ops import box_cxcywh_to_xyxy, elementwise_box_iou


class BoxPairLosses(NamedTuple):
    """Per pair ``(K,)``: ``l1`` summed over the 4 coordinates, ``giou`` = 1 - GIoU, and the plain ``iou``."""

    l1: Tensor
    giou: Tensor
    iou: Tensor


def box_pair_losses(pred_boxes: Tensor, target_boxes: Tensor, target_boxes_xyxy: Tensor) -> BoxPairLosses:
    """``pred_boxes``, ``target_boxes`` ``(K, 4)`` cxcywh and the targets as xyxy ``(K, 4)``.

    The criterion sums each term over pairs and divides by ``num_boxes`` (not by ``K``).
    """
    l1 = (pred_boxes - target_boxes).abs().sum(dim=-1)
    iou, giou = elementwise_box_iou(box_cxcywh_to_xyxy(pred_boxes), target_boxes_xyxy)
    return BoxPairLosses(l1=l1, giou=1 - giou, iou=iou)
