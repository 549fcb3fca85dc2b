"""COCO segmentations: validation at load time and decoding to a boolean mask.

A segmentation is one of
- polygons: a list of flat ``[x1, y1, x2, y2, ...]`` lists in pixels (each >= 3 points);
- uncompressed RLE: ``{"size": [h, w], "counts": [run, run, ...]}`` (column-major runs, 0s first);
- compressed RLE: ``{"size": [h, w], "counts": "<COCO LEB128 string>"}``;
- nothing (absent, ``None`` or ``[]``): the object is bbox-only and has no mask target.

Decoding uses the COCO reference rasteriser from ``faster_coco_eval`` (the same code the
evaluation uses), so training and evaluation masks agree pixel for pixel.

Bounded before rasterising: that rasteriser walks every polygon edge in fifth-of-a-pixel steps, so one
polygon with huge coordinates (a unit bug, or hostile) would need gigabytes. Validation refuses vertices
more than :data:`MAX_OUTSIDE_SIDES` image sides outside the image, clips the rest at
:data:`CLIP_MARGIN_SIDES` (the pixels inside the image do not change) and refuses outlines longer than
:data:`MAX_OUTLINE_PER_SIDE` x (width + height) after clipping.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
from faster_coco_eval.core import mask as coco_mask

from sam3tune.errors import UserError

Segmentation = list[list[float]] | dict[str, Any]

CLIP_MARGIN_SIDES = 1.0
"""Polygons reaching further outside the image than this many (longer) image sides are clipped there
(the rasteriser cuts at the image border anyway; the margin keeps the clipped edges' direction, so
pixels inside the image stay the same up to the rasteriser's 1/5-pixel rounding)."""
MAX_OUTSIDE_SIDES = 8.0
"""A vertex further outside the image than this many image sides is taken as absurd (wrong units, or
hostile): the mask is refused, the box kept."""
MAX_OUTLINE_PER_SIDE = 64
"""Outline length cap after clipping, in units of (width + height) pixels: a real outline is a few times
that at most; the rasteriser's memory grows with it (~80 bytes per outline pixel)."""


class SegmentationError(UserError, ValueError):
    """A segmentation that cannot give a mask; ``kind`` is a problem kind of the catalogue."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


class ValidSegmentation(NamedTuple):
    """A validated segmentation (None for a bbox-only object), how many polygon parts were dropped
    (fewer than 3 points or an odd coordinate count) and whether polygons were clipped to the image."""

    segmentation: Segmentation | None
    dropped: int
    clipped: bool


def validate_segmentation(segm: Any, height: int, width: int) -> ValidSegmentation:
    """Check ``segm`` of an object in an image of ``height`` x ``width`` and bound its geometry.

    Polygons come back clipped at :data:`CLIP_MARGIN_SIDES` around the image, invalid parts removed.
    Raises :class:`SegmentationError` (kinds ``polygon_invalid``, ``rle_size_mismatch``,
    ``segmentation_malformed``, ``segmentation_out_of_range``, ``mask_empty``) when no mask can be made.
    """
    if segm is None or (isinstance(segm, list) and all(isinstance(p, list) and not p for p in segm)):
        return ValidSegmentation(None, 0, False)
    if isinstance(segm, dict):
        return ValidSegmentation(_validate_rle(segm, height, width), 0, False)
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
    clipped, was_clipped = bound_polygons(polygons, height, width)
    return ValidSegmentation(clipped, dropped, was_clipped)


def bound_polygons(polygons: list[list[float]], height: int, width: int) -> tuple[list[list[float]], bool]:
    """Polygons (flat ``[x1, y1, ...]`` pixel lists) clipped at :data:`CLIP_MARGIN_SIDES` around the image,
    and whether anything was clipped. Raises :class:`SegmentationError`: ``segmentation_out_of_range``
    for a vertex beyond :data:`MAX_OUTSIDE_SIDES` image sides or an outline too long to rasterise,
    ``mask_empty`` when nothing is left inside."""
    side = max(height, width)
    reach, margin = MAX_OUTSIDE_SIDES * side, CLIP_MARGIN_SIDES * side
    low_x, low_y, high_x, high_y = -margin, -margin, width + margin, height + margin
    xs = [v for p in polygons for v in p[0::2]]
    ys = [v for p in polygons for v in p[1::2]]
    far = max(-min(xs), -min(ys), max(xs) - width, max(ys) - height)
    if far > reach:
        raise SegmentationError(
            "segmentation_out_of_range",
            f"polygon reaches {far:.4g} px outside the {width}x{height} image (x in [{min(xs):.4g}, "
            f"{max(xs):.4g}], y in [{min(ys):.4g}, {max(ys):.4g}]): wrong units?",
        )
    inside = min(xs) >= low_x and min(ys) >= low_y and max(xs) <= high_x and max(ys) <= high_y
    if not inside:
        polygons = [clip_polygon(p, low_x, low_y, high_x, high_y) for p in polygons]
        polygons = [p for p in polygons if len(p) >= 6]
        if not polygons:
            raise SegmentationError("mask_empty", f"polygon lies outside the {width}x{height} image")
    outline = sum(_outline_length(p) for p in polygons)
    if outline > MAX_OUTLINE_PER_SIDE * (width + height):
        raise SegmentationError(
            "segmentation_out_of_range",
            f"polygon outline of {outline:.4g} px is longer than {MAX_OUTLINE_PER_SIDE} x (width + height) "
            f"of the {width}x{height} image: too long to rasterise safely",
        )
    return polygons, not inside


def clip_polygon(flat: list[float], x0: float, y0: float, x1: float, y1: float) -> list[float]:
    """Sutherland-Hodgman: the part of a polygon inside the rectangle, as a flat coordinate list."""
    points = list(zip(flat[0::2], flat[1::2], strict=True))
    for axis, bound, keep_above in ((0, x0, True), (0, x1, False), (1, y0, True), (1, y1, False)):
        if not points:
            break

        def inside(
            p: tuple[float, float], axis: int = axis, bound: float = bound, keep: bool = keep_above
        ) -> bool:
            return p[axis] >= bound if keep else p[axis] <= bound

        clipped = []
        for i, current in enumerate(points):
            previous = points[i - 1]
            if inside(current) != inside(previous):
                t = (bound - previous[axis]) / (current[axis] - previous[axis])
                crossing = [
                    previous[0] + t * (current[0] - previous[0]),
                    previous[1] + t * (current[1] - previous[1]),
                ]
                crossing[axis] = bound
                clipped.append((crossing[0], crossing[1]))
            if inside(current):
                clipped.append(current)
        points = clipped
    return [v for point in points for v in point]


def _outline_length(flat: list[float]) -> float:
    """Sum over the edges of max(|dx|, |dy|): the steps the COCO rasteriser takes along the outline."""
    xs, ys = flat[0::2], flat[1::2]
    return sum(max(abs(xs[i] - xs[i - 1]), abs(ys[i] - ys[i - 1])) for i in range(len(xs)))


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
    rle, top, left = _window_rle(segm, height, width)
    try:
        return MaskCrop(coco_mask.decode(rle).astype(bool), top, left)
    except Exception as err:  # a corrupt compressed RLE string
        raise SegmentationError("segmentation_malformed", f"RLE cannot be decoded: {err}") from err


def mask_extent(segm: Segmentation, height: int, width: int) -> tuple[int, tuple[float, float, float, float]]:
    """Pixel count and pixel extent ``(x0, y0, x1, y1)`` of a validated segmentation, from its RLE
    (no full-size decode)."""
    rle, top, left = _window_rle(segm, height, width)
    area = int(coco_mask.area(rle))
    x, y, w, h = (float(v) for v in coco_mask.toBbox(rle))
    return area, (x + left, y + top, x + left + w, y + top + h)


def _window_rle(segm: Segmentation, height: int, width: int) -> tuple[dict[str, Any], int, int]:
    """The RLE of a validated segmentation and the image pixel (top, left) of its pixel (0, 0):
    the full image for RLE, a window around the polygons otherwise."""
    if isinstance(segm, dict):
        rle = segm if not isinstance(segm["counts"], list) else coco_mask.frPyObjects(segm, height, width)
        if isinstance(rle["counts"], str):
            rle = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
        return rle, 0, 0
    xs = np.concatenate([np.asarray(p[0::2], dtype=np.float64) for p in segm])
    ys = np.concatenate([np.asarray(p[1::2], dtype=np.float64) for p in segm])
    left = int(np.clip(np.floor(xs.min()) - 1, 0, width - 1))
    top = int(np.clip(np.floor(ys.min()) - 1, 0, height - 1))
    right = int(np.clip(np.ceil(xs.max()) + 2, left + 1, width))
    bottom = int(np.clip(np.ceil(ys.max()) + 2, top + 1, height))
    shifted = [[v - (left if k % 2 == 0 else top) for k, v in enumerate(p)] for p in segm]
    return coco_mask.merge(coco_mask.frPyObjects(shifted, bottom - top, right - left)), top, left


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
