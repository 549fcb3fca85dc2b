"""COCO segmentations: validation at load time and decoding to a boolean mask.

A segmentation is one of
- polygons: a list of flat ``[x1, y1, x2, y2, ...]`` lists in pixels (each >= 3 points);
- uncompressed RLE: ``{"size": [h, w], "counts": [run, run, ...]}`` (column-major runs, 0s first);
- compressed RLE: ``{"size": [h, w], "counts": "<COCO LEB128 string>"}``;
- nothing (absent, ``None`` or ``[]``): the object is bbox-only and has no mask target.

Decoding uses the COCO reference rasteriser from ``faster_coco_eval`` (the same code the
evaluation uses), so training and evaluation masks agree pixel for pixel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
from faster_coco_eval.core import mask as coco_mask

Segmentation = list[list[float]] | dict[str, Any]


class SegmentationError(ValueError):
    """A segmentation that cannot give a mask; ``kind`` is a problem kind of the catalogue."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def validate_segmentation(segm: Any, height: int, width: int) -> tuple[Segmentation | None, int]:
    """Check ``segm`` of an object in an image of ``height`` x ``width``.

    Returns ``(segmentation, dropped_polygons)``: the usable segmentation (invalid polygon parts
    removed) or None for a bbox-only object, and how many polygon parts were removed.
    Raises :class:`SegmentationError` (kinds ``polygon_invalid``, ``rle_size_mismatch``,
    ``segmentation_malformed``) when no mask can be made at all.
    """
    if segm is None or (isinstance(segm, list) and all(isinstance(p, list) and not p for p in segm)):
        return None, 0
    if isinstance(segm, dict):
        return _validate_rle(segm, height, width), 0
    if not isinstance(segm, list):
        raise SegmentationError("segmentation_malformed", f"segmentation of type {type(segm).__name__}")
    if segm and all(_is_number(v) for v in segm):
        segm = [segm]  # a single flat polygon without the outer list
    polygons, dropped = [], 0
    for part in segm:
        if not isinstance(part, list) or not all(_is_number(v) and math.isfinite(v) for v in part):
            raise SegmentationError("segmentation_malformed", "polygon with non-numeric coordinates")
        if len(part) < 6 or len(part) % 2:
            dropped += 1
            continue
        polygons.append([float(v) for v in part])
    if not polygons:
        sizes = ", ".join(str(len(p)) for p in segm if isinstance(p, list))
        raise SegmentationError(
            "polygon_invalid", f"no polygon with >= 3 points and an even coordinate count (lengths {sizes})"
        )
    return polygons, dropped


def _validate_rle(segm: dict[str, Any], height: int, width: int) -> dict[str, Any]:
    size, counts = segm.get("size"), segm.get("counts")
    if not (isinstance(size, Sequence) and len(size) == 2 and all(isinstance(v, int) for v in size)):
        raise SegmentationError("segmentation_malformed", f"RLE without a valid size [h, w]: {size!r}")
    if [int(size[0]), int(size[1])] != [height, width]:
        raise SegmentationError(
            "rle_size_mismatch", f"RLE size {list(size)} differs from the image size [{height}, {width}]"
        )
    if isinstance(counts, list):
        if not all(isinstance(v, int) and v >= 0 for v in counts) or sum(counts) != height * width:
            raise SegmentationError(
                "segmentation_malformed", f"uncompressed RLE counts do not sum to {height}*{width}"
            )
    elif isinstance(counts, (str, bytes)):
        runs = rle_string_counts(counts if isinstance(counts, str) else counts.decode("ascii", "replace"))
        if runs is None or any(v < 0 for v in runs) or sum(runs) != height * width:
            raise SegmentationError(
                "segmentation_malformed",
                f"compressed RLE counts are corrupt or do not sum to {height}*{width}",
            )
    else:
        raise SegmentationError("segmentation_malformed", "RLE counts are neither a list nor a string")
    return {"size": [height, width], "counts": counts}


def rle_string_counts(text: str) -> list[int] | None:
    """The run lengths of a compressed COCO RLE string, or None when the string is cut short.

    Format: each run is a variable-length signed integer, 5 bits per character (offset 48, bit
    0x20 = more characters follow, bit 0x10 of the last character = negative); from the third run
    on, each value is stored as the difference to the run two places before.
    """
    runs: list[int] = []
    pos = 0
    while pos < len(text):
        value, shift, more = 0, 0, True
        while more:
            if pos >= len(text):
                return None
            code = ord(text[pos]) - 48
            if not 0 <= code < 64:
                return None
            value |= (code & 0x1F) << shift
            more = bool(code & 0x20)
            pos += 1
            shift += 5
            if not more and code & 0x10:
                value -= 1 << shift
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    return runs


class MaskCrop(NamedTuple):
    """A decoded mask window: ``mask`` (h, w) bool whose pixel (0, 0) is image pixel (``top``, ``left``).

    Every pixel of the object lies inside the window; the image outside it is False.
    """

    mask: np.ndarray
    top: int
    left: int


def decode_segmentation(segm: Segmentation, height: int, width: int) -> MaskCrop:
    """A validated segmentation of an ``height`` x ``width`` image, rasterised the COCO way.

    Polygons are rasterised in a window around them (shifted by whole pixels, which gives the
    same pixels as the full image at a fraction of the cost); RLE decodes to the full image.
    """
    if isinstance(segm, dict):
        rle = segm if not isinstance(segm["counts"], list) else coco_mask.frPyObjects(segm, height, width)
        if isinstance(rle["counts"], str):
            rle = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
        try:
            return MaskCrop(coco_mask.decode(rle).astype(bool), 0, 0)
        except Exception as err:  # a corrupt compressed RLE string
            raise SegmentationError("segmentation_malformed", f"RLE cannot be decoded: {err}") from err
    xs = np.concatenate([np.asarray(p[0::2], dtype=np.float64) for p in segm])
    ys = np.concatenate([np.asarray(p[1::2], dtype=np.float64) for p in segm])
    left = int(np.clip(np.floor(xs.min()) - 1, 0, width - 1))
    top = int(np.clip(np.floor(ys.min()) - 1, 0, height - 1))
    right = int(np.clip(np.ceil(xs.max()) + 2, left + 1, width))
    bottom = int(np.clip(np.ceil(ys.max()) + 2, top + 1, height))
    shifted = [[v - (left if k % 2 == 0 else top) for k, v in enumerate(p)] for p in segm]
    rle = coco_mask.merge(coco_mask.frPyObjects(shifted, bottom - top, right - left))
    return MaskCrop(coco_mask.decode(rle).astype(bool), top, left)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
