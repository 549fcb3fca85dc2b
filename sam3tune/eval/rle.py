"""Binary masks <-> COCO compressed run-length encoding (RLE), JSON-ready.

An RLE here is ``{"size": [height, width], "counts": str}``, exactly what a COCO results file
holds in ``segmentation``. Encoding and decoding use faster-coco-eval's mask API.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from faster_coco_eval.core import mask as coco_mask

from sam3tune.data.masks import rle_string_counts

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


def rle_problem(segmentation: object) -> str | None:
    """What is wrong with a JSON RLE ``{"size": [h, w], "counts": str | list[int]}``, or None.

    The counts must decode (COCO's 6-bit character code, no number cut short) to non-negative run lengths
    that cover exactly ``h * w`` pixels: a mask encoded for another image size fails here."""
    if not isinstance(segmentation, dict) or "size" not in segmentation or "counts" not in segmentation:
        return "segmentation must be an RLE {'size': [height, width], 'counts': ...}"
    size = segmentation["size"]
    if not (
        isinstance(size, list)
        and len(size) == 2
        and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)
    ):
        return f"segmentation size must be [height, width] of positive integers, got {size!r}"
    counts = segmentation["counts"]
    if isinstance(counts, str):
        runs = rle_string_counts(counts)
        if runs is None:
            return "segmentation counts is not a valid compressed RLE string"
    elif isinstance(counts, list) and all(isinstance(c, int) and not isinstance(c, bool) for c in counts):
        runs = counts
    else:
        kind = type(counts).__name__
        return f"segmentation counts must be a compressed string or a list of integers, got {kind}"
    if any(r < 0 for r in runs):
        return "segmentation counts hold a negative run length"
    if sum(runs) != size[0] * size[1]:
        return (
            f"segmentation counts cover {sum(runs)} pixels, but its size {size} has {size[0] * size[1]} "
            "(an RLE of another image size?)"
        )
    return None
