"""Ground truth of a batch, checked and packed once per step for the matchers and the loss terms.

Input (the data -> loss interface): a list of ``B`` dicts, one per query (one prompt on one image):
``boxes`` ``(n, 4)`` cxcywh in ``[0, 1]``, optional ``masks`` ``(n, H, W)`` bool (the same ``H, W`` for
every query) and optional ``is_valid_mask`` ``(n,)`` bool (False for a bbox-only object). ``n`` may be 0.

Packed layout: the GT of query 0 first, then query 1, ...; GT ``j`` of query ``b`` has the global index
``offsets[b] + j``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from sam3tune.loss.box_ops import box_cxcywh_to_xyxy

# Boxes may overshoot [0, 1] by float rounding in the transforms; pixel units overshoot by far more.
BOX_RANGE_TOLERANCE = 1e-3


@dataclass(frozen=True)
class PackedTargets:
    """All GT of a batch of ``B`` queries, ``N`` objects in total, ``T = max_b n_b``."""

    boxes: Tensor  # (N, 4) cxcywh
    boxes_xyxy: Tensor  # (N, 4)
    counts: tuple[int, ...]  # (B,) n_b
    offsets: Tensor  # (B,) int64, global index of each query's first GT
    padded_boxes: Tensor  # (B, T, 4) cxcywh, zero boxes in the padding
    padded_is_real: Tensor  # (B, T) bool, False in the padding
    has_visible_object: Tensor  # (B,) bool, some GT with width > 0 and height > 0
    masks: Tensor | None  # (N, H, W) bool
    is_valid_mask: Tensor | None  # (N,) bool

    @property
    def batch_size(self) -> int:
        return len(self.counts)

    @property
    def num_objects(self) -> int:
        return int(self.boxes.shape[0])

    @property
    def num_visible_objects(self) -> Tensor:
        """Number of GT boxes with width > 0 and height > 0 (0-d int64 tensor)."""
        return (self.boxes[:, 2:] > 0).all(dim=-1).sum()


def pack_targets(
    targets: Sequence[Mapping[str, Tensor]], device: torch.device, dtype: torch.dtype = torch.float32
) -> PackedTargets:
    """Check ``targets`` and pack them on ``device`` (boxes as ``dtype``).

    Raises ``ValueError`` naming the bad query and field.
    """
    if isinstance(targets, Mapping) or not isinstance(targets, Sequence):
        raise ValueError(f"targets must be a list of dicts (one per query), got {type(targets).__name__}")
    boxes_list, counts = [], []
    for b, target in enumerate(targets):
        if not isinstance(target, Mapping) or "boxes" not in target:
            raise ValueError(f"targets[{b}] must be a dict with a 'boxes' entry, got {_describe(target)}")
        boxes = target["boxes"]
        if not isinstance(boxes, Tensor) or boxes.dim() != 2 or boxes.shape[1] != 4:
            raise ValueError(
                f"targets[{b}]['boxes'] must be an (n, 4) tensor of cxcywh boxes, got {_describe(boxes)}"
            )
        if not boxes.is_floating_point():
            raise ValueError(f"targets[{b}]['boxes'] must be floating point, got {boxes.dtype}")
        boxes_list.append(boxes)
        counts.append(int(boxes.shape[0]))
    if not targets:
        raise ValueError("targets is empty: expected one dict per query")

    boxes = torch.cat([b.to(device=device, dtype=dtype) for b in boxes_list])
    _check_box_values(boxes, counts)

    batch_size, most = len(counts), max(counts)
    offsets_list = [0]
    for n in counts[:-1]:
        offsets_list.append(offsets_list[-1] + n)
    offsets = torch.tensor(offsets_list, dtype=torch.int64, device=device)
    padded_is_real = torch.arange(most, device=device)[None, :] < torch.tensor(counts, device=device)[:, None]
    padded_boxes = boxes.new_zeros(batch_size, most, 4)
    padded_boxes[padded_is_real] = boxes
    visible = (padded_boxes[..., 2:] > 0).all(dim=-1) & padded_is_real

    masks, is_valid = _pack_masks(targets, counts, device)
    return PackedTargets(
        boxes=boxes,
        boxes_xyxy=box_cxcywh_to_xyxy(boxes),
        counts=tuple(counts),
        offsets=offsets,
        padded_boxes=padded_boxes,
        padded_is_real=padded_is_real,
        has_visible_object=visible.any(dim=1),
        masks=masks,
        is_valid_mask=is_valid,
    )


def _check_box_values(boxes: Tensor, counts: list[int]) -> None:
    low, high = -BOX_RANGE_TOLERANCE, 1 + BOX_RANGE_TOLERANCE
    bad = ~torch.isfinite(boxes) | (boxes < low) | (boxes > high)
    if not bool(bad.any()):  # the only host sync of the check
        return
    first = int(bad.any(dim=1).nonzero()[0, 0])
    query = next(b for b in range(len(counts)) if first < sum(counts[: b + 1]))
    row = boxes[first].tolist()
    where = f"targets[{query}]['boxes'][{first - sum(counts[:query])}] = {[round(v, 4) for v in row]}"
    if not all(torch.isfinite(boxes[first]).tolist()):
        raise ValueError(f"{where} contains NaN or inf")
    hint = (
        " (this looks like pixel units: divide cx and w by the image width, cy and h by the height)"
        if max(row) > 1.5
        else ""
    )
    raise ValueError(f"{where} is outside [0, 1]: boxes must be cxcywh normalised by the image size{hint}")


def _pack_masks(
    targets: Sequence[Mapping[str, Tensor]], counts: list[int], device: torch.device
) -> tuple[Tensor | None, Tensor | None]:
    with_masks = [b for b, t in enumerate(targets) if t.get("masks") is not None]
    if not with_masks:
        return None, None
    missing = [b for b, t in enumerate(targets) if t.get("masks") is None and counts[b] > 0]
    if missing:
        raise ValueError(
            f"targets[{with_masks[0]}] has 'masks' but targets[{missing[0]}] (with {counts[missing[0]]} "
            "objects) has none: give masks for every query (an all-False mask with is_valid_mask=False "
            "for a bbox-only object)"
        )
    size = None
    masks_list, valid_list = [], []
    for b, target in enumerate(targets):
        masks = target.get("masks")
        if masks is None:  # a query without objects may omit its (0, H, W) masks
            continue
        if not isinstance(masks, Tensor) or masks.dim() != 3 or masks.shape[0] != counts[b]:
            raise ValueError(
                f"targets[{b}]['masks'] must be an (n, H, W) tensor with n = {counts[b]} (its number of "
                f"boxes), got {_describe(masks)}"
            )
        if masks.dtype != torch.bool:
            raise ValueError(f"targets[{b}]['masks'] must be bool, got {masks.dtype} (use masks > 0.5)")
        if size is None:
            size = tuple(masks.shape[1:])
        elif tuple(masks.shape[1:]) != size:
            raise ValueError(
                f"targets[{b}]['masks'] is {tuple(masks.shape[1:])} but targets[{with_masks[0]}]['masks'] is "
                f"{size}: all masks of a batch must have the same (H, W) (the padded image canvas)"
            )
        valid = target.get("is_valid_mask")
        if valid is None:
            valid = torch.ones(counts[b], dtype=torch.bool, device=device)
        elif not isinstance(valid, Tensor) or valid.shape != (counts[b],) or valid.dtype != torch.bool:
            raise ValueError(
                f"targets[{b}]['is_valid_mask'] must be a ({counts[b]},) bool tensor, got {_describe(valid)}"
            )
        masks_list.append(masks.to(device))
        valid_list.append(valid.to(device))
    return torch.cat(masks_list), torch.cat(valid_list)


def _describe(value: object) -> str:
    if isinstance(value, Tensor):
        return f"a tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    return f"{type(value).__name__}"
