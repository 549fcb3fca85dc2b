"""Model outputs -> per-query detections in original image pixels (the official SAM 3 inference).

score = sigmoid(pred_logit) * sigmoid(presence_logit); detections below ``score_threshold`` are
dropped, optional greedy NMS, then at most ``max_detections`` per query. Boxes are mapped back by
scaling each axis (the eval transform is a plain square resize of the whole image); masks of the
kept detections only are upsampled bilinearly to the original size, thresholded after the sigmoid
and stored as COCO compressed RLE, a few at a time so that memory stays bounded.

The semantic head's maps (``semantic_seg``) become presence-gated probabilities (``semantic_scores``) and
label maps (``label_map``), for evaluation (``semantic_eval``) and ``predict`` alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from sam3tune.eval.config import PostprocessConfig
from sam3tune.eval.nms import nms
from sam3tune.eval.rle import RLE, decode_masks, encode_masks

# Upsample at most this many output pixels at once (~64 MiB of float32).
_MASK_PIXELS_PER_CHUNK = 16 * 1024 * 1024


@dataclass
class Detections:
    """The detections of one query (one prompt on one image), in original image pixels.

    Attributes:
        image_size: ``(height, width)`` of the original image.
        scores: ``(N,)`` float32, decreasing.
        boxes: ``(N, 4)`` float32 xyxy pixels, clipped to the image.
        masks: N compressed RLEs of ``image_size`` (COCO ``segmentation``), or None without masks.
    """

    image_size: tuple[int, int]
    scores: np.ndarray
    boxes: np.ndarray
    masks: list[RLE] | None = None

    def __len__(self) -> int:
        return len(self.scores)

    def mask_array(self) -> np.ndarray:
        """Decoded masks, ``(N, height, width)`` bool."""
        if self.masks is None:
            raise ValueError("these detections carry no masks")
        return decode_masks(self.masks, *self.image_size)

    def to_coco_results(self, image_id: int, category_id: int) -> list[dict]:
        """COCO results entries: ``image_id, category_id, bbox`` (xywh px), ``score``, ``segmentation``."""
        results = []
        for i in range(len(self)):
            x0, y0, x1, y1 = (float(v) for v in self.boxes[i])
            entry = {
                "image_id": int(image_id),
                "category_id": int(category_id),
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "score": float(self.scores[i]),
            }
            if self.masks is not None:
                entry["segmentation"] = self.masks[i]
            results.append(entry)
        return results


def detection_scores(outputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """``(B, Q)`` scores = sigmoid(pred_logits) * sigmoid(presence_logits)."""
    logits, presence = outputs["pred_logits"], outputs["presence_logits"]
    if logits.dim() != 2 or presence.shape != (logits.shape[0], 1):
        raise ValueError(
            f"expected pred_logits (B, Q) and presence_logits (B, 1), got {tuple(logits.shape)} and "
            f"{tuple(presence.shape)}"
        )
    return logits.float().sigmoid() * presence.float().sigmoid()


@torch.no_grad()
def postprocess(
    outputs: dict[str, torch.Tensor],
    image_sizes: Sequence[tuple[int, int]],
    config: PostprocessConfig | None = None,
) -> list[Detections]:
    """Turn the final-layer outputs of B queries into B :class:`Detections`.

    Args:
        outputs: ``pred_logits`` (B, Q), ``presence_logits`` (B, 1), ``pred_boxes`` (B, Q, 4) cxcywh
            in [0, 1] of the square model canvas, ``pred_masks`` (B, Q, h, w) logits (only read
            when ``config.with_masks``).
        image_sizes: original ``(height, width)`` of the image of each query, length B.
        config: thresholds and limits; defaults to :class:`PostprocessConfig`.
    """
    config = config or PostprocessConfig()
    scores = detection_scores(outputs)
    boxes = outputs["pred_boxes"].float()
    if len(image_sizes) != scores.shape[0]:
        raise ValueError(f"{len(image_sizes)} image sizes for {scores.shape[0]} queries")
    if boxes.shape != (*scores.shape, 4):
        raise ValueError(f"pred_boxes has shape {tuple(boxes.shape)}, expected {(*scores.shape, 4)}")
    masks = outputs["pred_masks"] if config.with_masks else None
    if masks is not None and masks.shape[:2] != scores.shape:
        raise ValueError(
            f"pred_masks has shape {tuple(masks.shape)}, expected {tuple(scores.shape)} + (h, w)"
        )

    detections = []
    for b, (height, width) in enumerate(image_sizes):
        scale = boxes.new_tensor([width, height, width, height])
        xyxy = _cxcywh_to_xyxy(boxes[b]) * scale
        xyxy = torch.minimum(xyxy.clamp(min=0), scale)
        keep = _select(scores[b], xyxy, config)
        masks_rle = None
        if masks is not None:
            masks_rle = _masks_to_rle(masks[b, keep], (height, width), config.mask_threshold)
        detections.append(
            Detections(
                image_size=(int(height), int(width)),
                scores=scores[b, keep].cpu().numpy(),
                boxes=xyxy[keep].cpu().numpy(),
                masks=masks_rle,
            )
        )
    return detections


def _cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)


def _select(scores: torch.Tensor, boxes: torch.Tensor, config: PostprocessConfig) -> torch.Tensor:
    """Indices of the kept queries, by decreasing score."""
    candidates = torch.nonzero(scores >= config.score_threshold).squeeze(1)
    candidates = candidates[torch.argsort(scores[candidates], descending=True, stable=True)]
    if config.nms_iou_threshold is not None and len(candidates) > 1:
        candidates = candidates[nms(boxes[candidates], scores[candidates], config.nms_iou_threshold)]
    return candidates[: config.max_detections]


def _masks_to_rle(logits: torch.Tensor, size: tuple[int, int], threshold: float) -> list[RLE]:
    """``(K, h, w)`` mask logits -> K RLEs of ``size`` (bilinear upsampling, then sigmoid > threshold).

    sigmoid(x) > t is tested as x > log(t / (1 - t)), which is the same and skips the sigmoid.
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"mask_threshold must be in (0, 1), got {threshold}")
    logit_threshold = math.log(threshold / (1.0 - threshold))
    height, width = int(size[0]), int(size[1])
    chunk = max(1, _MASK_PIXELS_PER_CHUNK // max(1, height * width))
    rles: list[RLE] = []
    for start in range(0, logits.shape[0], chunk):
        part = logits[start : start + chunk, None].float()
        upsampled = F.interpolate(part, size=(height, width), mode="bilinear", align_corners=False)
        # (N, W, H) contiguous on the compute device = the column-major layout the RLE encoder reads
        column_major = (upsampled[:, 0] > logit_threshold).transpose(1, 2).contiguous().cpu().numpy()
        binary = column_major.transpose(0, 2, 1)
        rles.extend(encode_masks(binary))
    return rles


# --------------------------------------------------------------- the semantic head's maps
SEMANTIC_THRESHOLD = 0.5
"""A pixel takes a class when its presence-gated probability is above this (``label_map``)."""


def semantic_scores(outputs: dict, size: int | tuple[int, int]) -> Tensor:
    """``(B, H, W)`` presence-gated probabilities of each query's class, upsampled bilinearly to ``size``."""
    logits = outputs["semantic_seg"].float()
    maps = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)[:, 0].sigmoid()
    return maps * outputs["presence_logits"].float().reshape(-1, 1, 1).sigmoid()


def label_map(scores: Tensor, class_ids: Tensor, threshold: float = SEMANTIC_THRESHOLD) -> Tensor:
    """``(H, W)`` int64 map of ``class_ids[argmax]`` where the best of ``scores`` ``(C, H, W)`` exceeds
    ``threshold``, else -1."""
    best, index = scores.max(dim=0)
    return torch.where(best > threshold, class_ids.to(scores.device)[index], torch.full_like(index, -1))
