"""RoIAlign in plain torch, for HF Sam3's geometry (box-prompt) encoder where torchvision is missing.

HF's ``Sam3GeometryEncoder`` pools image features inside each prompt box with
``torchvision.ops.roi_align(features, boxes, output_size)`` (``spatial_scale`` 1, adaptive sampling,
``aligned=False``). torchvision from PyPI does not import beside the CPU torch this project pins, so
without it box prompts fail inside transformers. :func:`install_roi_align` gives the transformers module
this implementation when (and only when) torchvision is not importable.

The operator (Mask R-CNN's RoIAlign, legacy ``aligned=False`` variant): a box ``(x0, y0, x1, y1)`` in
feature pixels has size ``w = max(x1 - x0, 1)``, ``h = max(y1 - y0, 1)``; it is cut into ``P x P`` bins,
each bin samples a ``ceil(h / P) x ceil(w / P)`` grid of points at the centres of its sub-cells, every
point takes the bilinear interpolation of the features (points more than one pixel outside the map give
0; points in [-1, 0] are clamped to 0; the last row/column is replicated beyond it) and the bin is their
mean. Bilinear weights factor into a row part and a column part, so each box's pooling is two matrix
products: ``rows (P, H) @ features (C, H, W) @ cols (W, P)``, done per image for all its boxes.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import Tensor


def roi_align(features: Tensor, boxes: list[Tensor] | Tensor, output_size: int | tuple[int, int]) -> Tensor:
    """Pool ``features`` (N, C, H, W) inside boxes.

    ``boxes``: one ``(k_n, 4)`` xyxy tensor per image (in feature-map pixels), or an ``(R, 5)`` tensor of
    ``(image index, x0, y0, x1, y1)`` rows. Returns ``(R, C, P_h, P_w)`` in the order of the boxes, in the
    dtype of ``features`` (computed in float32 at least).
    """
    ph, pw = (output_size, output_size) if isinstance(output_size, int) else output_size
    compute = torch.promote_types(features.dtype, torch.float32)
    with torch.autocast(features.device.type, enabled=False):  # (HF hands bf16 features over as fp16)
        if isinstance(boxes, Tensor):
            image_of_box, xyxy = boxes[:, 0].long(), boxes[:, 1:].to(compute)
        else:
            image_of_box = torch.cat(
                [
                    torch.full((len(b),), i, dtype=torch.long, device=features.device)
                    for i, b in enumerate(boxes)
                ]
            )
            xyxy = (
                torch.cat([b.to(compute) for b in boxes])
                if boxes
                else features.new_zeros(0, 4, dtype=compute)
            )
        height, width = features.shape[-2:]
        rows, row_grid = _axis_weights(xyxy[:, 1], xyxy[:, 3], ph, height)
        cols, col_grid = _axis_weights(xyxy[:, 0], xyxy[:, 2], pw, width)
        count = (row_grid * col_grid).clamp(min=1).to(compute)
        pooled = features.new_zeros(len(xyxy), features.shape[1], ph, pw, dtype=compute)
        for image in image_of_box.unique().tolist():  # per image: no (R, C, H, W) copy of the features
            mine = image_of_box == image
            pooled[mine] = torch.einsum(
                "kph,chw,kqw->kcpq", rows[mine], features[image].to(compute), cols[mine]
            )
        pooled = pooled / count[:, None, None, None]
    return pooled.to(features.dtype)


def _axis_weights(start: Tensor, end: Tensor, bins: int, size: int) -> tuple[Tensor, Tensor]:
    """Summed bilinear weights ``(R, bins, size)`` of every bin's sample points along one axis, and the
    number of sample points per bin ``(R,)``."""
    extent = (end - start).clamp(min=1.0)
    bin_size = extent / bins
    grid = torch.ceil(extent / bins).long()
    most = max(int(grid.max()) if grid.numel() else 1, 1)
    step = torch.arange(most, device=start.device, dtype=start.dtype)
    bin_index = torch.arange(bins, device=start.device, dtype=start.dtype)
    # (R, bins, most) sample coordinates; points beyond a box's own grid get weight 0
    points = (
        start[:, None, None]
        + bin_index[None, :, None] * bin_size[:, None, None]
        + (step[None, None, :] + 0.5) * (bin_size / grid.clamp(min=1).to(start.dtype))[:, None, None]
    )
    used = step[None, None, :] < grid[:, None, None]
    inside = (points >= -1.0) & (points <= size) & used
    points = points.clamp(min=0.0)
    low = points.floor().long().clamp(max=size - 1)
    at_edge = low >= size - 1
    high = torch.where(at_edge, low, low + 1)
    frac = torch.where(at_edge, torch.zeros_like(points), points - low.to(points.dtype))
    weights = torch.zeros(*points.shape[:2], size, dtype=start.dtype, device=start.device)
    mask = inside.to(start.dtype)
    weights.scatter_add_(2, low, (1.0 - frac) * mask)
    weights.scatter_add_(2, high, frac * mask)
    return weights, grid


def install_roi_align() -> bool:
    """Let transformers' SAM 3 geometry encoder call :func:`roi_align` when torchvision is not importable.

    Returns True when this implementation is (now) in use, False when torchvision serves instead.
    Idempotent; affects only ``transformers.models.sam3.modeling_sam3``.
    """
    from transformers.models.sam3 import modeling_sam3

    current = getattr(modeling_sam3, "torchvision", None)
    if current is not None:
        return getattr(current, "sam3tune_roi_align", False)
    modeling_sam3.torchvision = SimpleNamespace(
        ops=SimpleNamespace(roi_align=roi_align), sam3tune_roi_align=True
    )
    return True
