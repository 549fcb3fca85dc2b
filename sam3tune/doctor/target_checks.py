"""Checks of a batch's targets (one dict per query: ``boxes`` (n, 4) cxcywh in [0, 1], optional ``masks``
(n, M, M) bool and ``is_valid_mask`` (n,) bool), wherever they come from: the data package, a custom
dataset or a hand-built batch.

The loss refuses boxes outside [0, 1] (pixels) with an error; it cannot see boxes that are in range but in
the wrong format (xyxy or COCO xywh read as cxcywh), nor boxes that disagree with their masks. Those are
caught here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from sam3tune.doctor.flags import Flag, make_flag
from sam3tune.loss.box_ops import box_cxcywh_to_xyxy, elementwise_box_iou
from sam3tune.loss.targets import BOX_RANGE_TOLERANCE

EXTENT_TOLERANCE = 0.01
"""How far (canvas fraction) a box read as cxcywh may reach outside the image before it is flagged."""
MASK_BOX_MIN_IOU = 0.5
"""Median IoU of target boxes with their masks' extents below which ``boxes_masks_disagree`` is raised."""
MASK_BOX_MIN_SIDE = 4
"""Objects narrower than this many mask pixels are left out of the box / mask comparison."""


def _first(where: Tensor, boxes: Sequence[Tensor]) -> str:
    """``targets[q]['boxes'][i] = [...]`` of the first True row of ``where`` (packed order)."""
    index = int(where.nonzero()[0, 0])
    for query, query_boxes in enumerate(boxes):
        if index < len(query_boxes):
            row = [round(v, 4) for v in query_boxes[index].tolist()]
            return f"targets[{query}]['boxes'][{index}] = {row}"
        index -= len(query_boxes)
    raise AssertionError("unreachable: index beyond the packed boxes")


def target_flags(
    targets: Sequence[Mapping[str, Tensor]], *, dataset_targets: int | None = None
) -> list[Flag]:
    """Flags for ``targets``; ``dataset_targets`` is the target count of the dataset the batch came from
    (None for a batch built by hand or by a custom dataset)."""
    boxes = [t["boxes"].detach().float().cpu().reshape(-1, 4) for t in targets]
    packed = torch.cat(boxes) if boxes else torch.zeros(0, 4)
    flags = _count_flags(packed, len(targets), dataset_targets)
    if packed.numel() == 0:
        return flags
    bad = ~torch.isfinite(packed).all(dim=1) | (packed < -BOX_RANGE_TOLERANCE).any(dim=1)
    bad |= (packed > 1 + BOX_RANGE_TOLERANCE).any(dim=1)
    if bool(bad.any()):
        largest = float(packed[torch.isfinite(packed)].abs().max())
        unit = " (looks like pixels)" if largest > 1.5 else ""
        flags.append(
            make_flag(
                "boxes_not_normalised",
                f"{int(bad.sum())} of {len(packed)} target boxes are outside [0, 1], largest value "
                f"{largest:.4g}{unit}; first: {_first(bad, boxes)}",
            )
        )
        return flags
    xyxy = box_cxcywh_to_xyxy(packed)
    outside = ((xyxy < -EXTENT_TOLERANCE) | (xyxy > 1 + EXTENT_TOLERANCE)).any(dim=1)
    if bool(outside.any()):
        flags.append(
            make_flag(
                "boxes_outside_image",
                f"{int(outside.sum())} of {len(packed)} target boxes reach outside the image when read as "
                f"cxcywh; first: {_first(outside, boxes)}",
            )
        )
    flags.extend(_mask_agreement_flags(targets, xyxy))
    return flags


def _count_flags(packed: Tensor, num_queries: int, dataset_targets: int | None) -> list[Flag]:
    visible = int(((packed[:, 2] > 0) & (packed[:, 3] > 0)).sum()) if packed.numel() else 0
    if visible > 0:
        return []
    what = (
        f"{len(packed)} target objects in {num_queries} queries, none with positive width and height"
        if len(packed)
        else f"none of the {num_queries} queries of the batch has a target object"
    )
    if dataset_targets:  # the dataset has targets: this batch happens to have none
        return [
            make_flag(
                "batch_without_targets",
                f"{what} (the dataset has {dataset_targets})",
                severity="warning",
                fix="check the transforms (objects dropped as empty); other batches may be fine",
            )
        ]
    return [make_flag("batch_without_targets", what)]


def _mask_agreement_flags(targets: Sequence[Mapping[str, Tensor]], boxes_xyxy: Tensor) -> list[Flag]:
    """Compare each valid mask's bounding box with its target box (both as canvas fractions)."""
    mask_boxes, target_boxes, offset = [], [], 0
    for target in targets:
        count = len(target["boxes"])
        masks = target.get("masks")
        if masks is not None and count:
            masks = masks.detach().cpu().bool()
            valid = target.get("is_valid_mask")
            valid = torch.ones(count, dtype=torch.bool) if valid is None else valid.detach().cpu().bool()
            side_y, side_x = masks.shape[-2:]
            for i in range(count):
                rows, cols = masks[i].any(dim=1).nonzero(), masks[i].any(dim=0).nonzero()
                if not bool(valid[i]) or len(rows) == 0:
                    continue
                box = boxes_xyxy[offset + i]
                if (box[2] - box[0]) * side_x < MASK_BOX_MIN_SIDE or (
                    box[3] - box[1]
                ) * side_y < MASK_BOX_MIN_SIDE:
                    continue
                x0, x1 = int(cols[0, 0]), int(cols[-1, 0]) + 1
                y0, y1 = int(rows[0, 0]), int(rows[-1, 0]) + 1
                mask_boxes.append([x0 / side_x, y0 / side_y, x1 / side_x, y1 / side_y])
                target_boxes.append(box)
        offset += count
    if not mask_boxes:
        return []
    iou, _ = elementwise_box_iou(torch.tensor(mask_boxes, dtype=torch.float32), torch.stack(target_boxes))
    median = float(iou.median())
    if median >= MASK_BOX_MIN_IOU:
        return []
    return [
        make_flag(
            "boxes_masks_disagree",
            f"median IoU between target boxes and the extent of their masks is {median:.2f} over "
            f"{len(mask_boxes)} objects (1.0 when they agree)",
        )
    ]
