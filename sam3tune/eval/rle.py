"""Binary masks <-> COCO compressed run-length encoding (RLE), JSON-ready.

An RLE here is ``{"size": [height, width], "counts": str}``, exactly what a COCO results file
holds in ``segmentation``. Encoding and decoding use faster-coco-eval's mask API.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from faster_coco_eval.core import mask as coco_mask

RLE = dict  # {"size": [h, w], "counts": str}


def encode_masks(masks: np.ndarray) -> list[RLE]:
    """Encode ``(N, H, W)`` bool masks as N JSON-ready compressed RLEs."""
    if masks.ndim != 3:
        raise ValueError(f"encode_masks expects (N, H, W) masks, got shape {masks.shape}")
    if masks.shape[0] == 0:
        return []
    # The encoder wants (H, W, N) in Fortran order: each mask column-major. (N, W, H) in C order is
    # exactly that memory layout, and bool -> uint8 is a free view.
    column_major = np.ascontiguousarray(masks.astype(bool, copy=False).transpose(0, 2, 1))
    encoded = coco_mask.encode(column_major.view(np.uint8).transpose(2, 1, 0))
    return [_json_ready(rle) for rle in encoded]


def decode_masks(rles: Sequence[RLE], height: int, width: int) -> np.ndarray:
    """Decode RLEs of one image to ``(N, height, width)`` bool masks (N may be 0)."""
    if len(rles) == 0:
        return np.zeros((0, height, width), dtype=bool)
    for rle in rles:
        if list(rle["size"]) != [height, width]:
            raise ValueError(f"RLE of size {rle['size']} does not fit an image of size {[height, width]}")
    decoded = coco_mask.decode([_binary_ready(rle) for rle in rles])
    return decoded.transpose(2, 0, 1).astype(bool)


def mask_areas(rles: Sequence[RLE]) -> np.ndarray:
    """Pixel count of each RLE, ``(N,)`` int."""
    if len(rles) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.asarray(coco_mask.area([_binary_ready(rle) for rle in rles]), dtype=np.int64)


def _json_ready(rle: dict) -> RLE:
    counts = rle["counts"]
    return {
        "size": [int(s) for s in rle["size"]],
        "counts": counts.decode() if isinstance(counts, bytes) else counts,
    }


def _binary_ready(rle: RLE) -> dict:
    counts = rle["counts"]
    return {"size": list(rle["size"]), "counts": counts.encode() if isinstance(counts, str) else counts}


def annotation_rle(segmentation: list | dict, height: int, width: int) -> dict:
    """One COCO ``segmentation`` (polygons, uncompressed or compressed RLE) as a single RLE."""
    if isinstance(segmentation, list):
        return coco_mask.merge(coco_mask.frPyObjects(segmentation, height, width))
    if isinstance(segmentation.get("counts"), list):
        return coco_mask.frPyObjects(segmentation, height, width)
    return _binary_ready(segmentation)
