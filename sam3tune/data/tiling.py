"""Large images as tiles: the tile grid, objects clipped to a tile, and tile queries for training.

SAM 3 sees every image at one input size (1008 px), so objects of 10-40 px in a 10,000 px scene shrink
to a pixel when the whole image is resized. With ``data.tiling.size`` set, every image larger than the
tile is cut into a grid of ``size x size`` windows (neighbours share ``overlap`` of a side; the last
window of a row or column is moved inside the image, so every window is full-sized) and each window is
a training sample of its own:

- an object inside a window is a target with its box clipped to the window and its mask cropped to it
  (pixel-exact: polygons are rasterised in the window's frame, shifted by whole pixels; RLE runs are
  cropped without decoding the whole image);
- an object with less than ``min_visible`` of its area inside (mask pixels, else box area) is *dropped*
  on that window: no target, and its category is neither positive nor negative there (as a crowd
  region), since a sliver of it is in view;
- categories with no object in the window are its negatives; windows without any object are kept as
  negative-only samples for a share ``empty_tiles`` of them (chosen once, seeded);
- objects that are a target on no window at all (larger than a tile, or cut everywhere) are counted
  (``tile_object_lost``).

Images no larger than a tile stay whole. Pixels are read by window (:mod:`sam3tune.data.regions`).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
from faster_coco_eval.core import mask as coco_mask

from sam3tune.data.coco import CocoImage, CocoObject
from sam3tune.data.config import TilingConfig
from sam3tune.data.masks import (
    CLIP_MARGIN_SIDES,
    Segmentation,
    clip_polygon,
    decode_segmentation,
    mask_extent,
    rle_string_counts,
)
from sam3tune.data.queries import ImageQueries, QueryPlan, cap_objects, negative_count
from sam3tune.data.regions import Window

log = logging.getLogger(__name__)


def tile_starts(length: int, size: int, overlap: float) -> list[int]:
    """Start offsets of the tiles along a side of ``length`` pixels: stride ``size * (1 - overlap)``
    (at least 1), the last start moved to ``length - size``; ``[0]`` when the side fits one tile."""
    if length <= size:
        return [0]
    stride = max(1, round(size * (1.0 - overlap)))
    starts = list(range(0, length - size, stride))
    return [*starts, length - size]


def tile_windows(width: int, height: int, size: int, overlap: float) -> list[Window]:
    """The tile windows ``(left, top, right, bottom)`` of a ``width x height`` image, row by row."""
    xs, ys = tile_starts(width, size, overlap), tile_starts(height, size, overlap)
    return [(x, y, min(x + size, width), min(y + size, height)) for y in ys for x in xs]


def crop_mask(segmentation: Segmentation, height: int, width: int, window: Window) -> np.ndarray:
    """The pixels of a validated segmentation of a ``height x width`` image inside ``window``:
    ``(bottom - top, right - left)`` bool, equal to the full decoded mask cropped, without decoding it.

    RLE runs are cut to the window's columns and rows. Polygons are rasterised on a canvas from their
    own top-left corner (at most one window side before the window) to the window's far corner, shifted
    by whole pixels: the COCO rasteriser then sets exactly the pixels it sets on the whole image (it
    rounds negative coordinates differently, so the canvas never cuts a polygon on the left or top).
    Only a polygon reaching further than one window side outside the window is first clipped there
    (as :func:`~sam3tune.data.masks.bound_polygons` does for images), which can move its pixels along
    the clipped edges by the rasteriser's 1/5-pixel rounding."""
    left, top, right, bottom = window
    tile_w, tile_h = right - left, bottom - top
    if isinstance(segmentation, dict):
        return _crop_rle(segmentation, height, width, window)
    margin = CLIP_MARGIN_SIDES * max(tile_w, tile_h)
    xs = np.concatenate([np.asarray(p[0::2], dtype=np.float64) for p in segmentation])
    ys = np.concatenate([np.asarray(p[1::2], dtype=np.float64) for p in segmentation])
    low_x, low_y = max(0.0, left - margin), max(0.0, top - margin)
    high_x, high_y = right + margin, bottom + margin
    polygons = [list(p) for p in segmentation]
    if xs.min() < low_x or ys.min() < low_y or xs.max() > high_x or ys.max() > high_y:
        polygons = [clip_polygon(p, low_x, low_y, high_x, high_y) for p in polygons]
        polygons = [p for p in polygons if len(p) >= 6]
        if not polygons:
            return np.zeros((tile_h, tile_w), dtype=bool)
        xs = np.concatenate([np.asarray(p[0::2], dtype=np.float64) for p in polygons])
        ys = np.concatenate([np.asarray(p[1::2], dtype=np.float64) for p in polygons])
    origin_x = int(np.clip(np.floor(xs.min()) - 1, 0, left))
    origin_y = int(np.clip(np.floor(ys.min()) - 1, 0, top))
    shifted = [[v - (origin_x if k % 2 == 0 else origin_y) for k, v in enumerate(p)] for p in polygons]
    crop = decode_segmentation(shifted, bottom - origin_y, right - origin_x)
    canvas = np.zeros((bottom - origin_y, right - origin_x), dtype=bool)
    h, w = crop.mask.shape
    canvas[crop.top : crop.top + h, crop.left : crop.left + w] = crop.mask
    return canvas[top - origin_y :, left - origin_x :]


def _crop_rle(rle: dict, height: int, width: int, window: Window) -> np.ndarray:
    """Column-major RLE runs (zeros first) cut to ``window``: each run of ones is split at column
    boundaries and its rows clipped, then painted through a difference array."""
    left, top, right, bottom = window
    counts = rle["counts"]
    runs = np.asarray(
        counts
        if isinstance(counts, list)
        else rle_string_counts(counts if isinstance(counts, str) else counts.decode()),
        dtype=np.int64,
    )
    ends = np.cumsum(runs)
    starts = ends - runs
    first, last = starts[1::2], ends[1::2]  # runs of ones: linear indices [first, last)
    first = np.maximum(first, left * height)
    last = np.minimum(last, right * height)
    keep = last > first
    first, last = first[keep], last[keep]
    out = np.zeros((right - left, bottom - top + 1), dtype=np.int32)  # (columns, rows + 1)
    if len(first):
        col_first, col_last = first // height, (last - 1) // height
        spans = col_last - col_first + 1
        run = np.repeat(np.arange(len(first)), spans)
        column = col_first[run] + np.arange(int(spans.sum())) - np.repeat(np.cumsum(spans) - spans, spans)
        row_first = np.maximum(first[run] - column * height, top)
        row_last = np.minimum(last[run] - column * height, bottom)
        keep = row_last > row_first
        column, row_first, row_last = column[keep] - left, row_first[keep] - top, row_last[keep] - top
        np.add.at(out, (column, row_first), 1)
        np.add.at(out, (column, row_last), -1)
    return (np.cumsum(out, axis=1)[:, :-1] > 0).T


def clip_object(obj: CocoObject, image: CocoImage, window: Window) -> tuple[CocoObject | None, float]:
    """``obj`` (of ``image``) in the frame of ``window``, and the share of it inside (mask pixels when it
    has a mask, else box area). The clipped object has its box clipped to the window and its mask cropped
    (as an RLE of the tile); None when nothing of it is inside."""
    left, top, right, bottom = window
    x0, y0, x1, y1 = obj.box
    box = (max(x0, left) - left, max(y0, top) - top, min(x1, right) - left, min(y1, bottom) - top)
    if box[2] <= box[0] or box[3] <= box[1]:
        return None, 0.0
    if obj.segmentation is None:
        share = (box[2] - box[0]) * (box[3] - box[1]) / max(obj.box_area, 1e-12)
        return dataclasses.replace(obj, box=box), min(1.0, share)
    mask = crop_mask(obj.segmentation, image.height, image.width, window)
    inside = int(mask.sum())
    if inside == 0:
        return None, 0.0
    total, _ = mask_extent(obj.segmentation, image.height, image.width)
    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    counts = rle["counts"].decode("ascii") if isinstance(rle["counts"], bytes) else rle["counts"]
    segmentation = {"size": [bottom - top, right - left], "counts": counts}
    return dataclasses.replace(obj, box=box, segmentation=segmentation), min(1.0, inside / max(total, 1))


@dataclass
class TilingSummary:
    """What :func:`tile_plan` made of a split (``data inspect``'s ``tiling`` entry, the training log).

    Object counts are per (object, tile) pair: ``kept`` targets (``clipped`` of them cut by the tile
    border), ``dropped`` below ``min_visible``; ``objects_lost`` counts objects that are a target on no
    tile."""

    size: int
    overlap: float
    min_visible: float
    empty_tiles: float
    images_tiled: int = 0
    images_whole: int = 0
    tiles: int = 0
    tiles_with_objects: int = 0
    empty_tiles_kept: int = 0
    empty_tiles_left_out: int = 0
    object_tiles_kept: int = 0
    object_tiles_clipped: int = 0
    object_tiles_dropped: int = 0
    objects_lost: int = 0

    def line(self) -> str:
        """One log line."""
        return (
            f"tiling {self.size} px (overlap {self.overlap:g}): {self.images_tiled} images cut into "
            f"{self.tiles} tiles ({self.tiles_with_objects} with objects, {self.empty_tiles_kept} empty "
            f"kept, {self.empty_tiles_left_out} empty left out), {self.images_whole} images whole; "
            f"objects on tiles: {self.object_tiles_kept} kept ({self.object_tiles_clipped} clipped), "
            f"{self.object_tiles_dropped} dropped below {self.min_visible:g} visible, "
            f"{self.objects_lost} objects a target on no tile"
        )


def tile_plan(plan: QueryPlan, config: TilingConfig, seed: int = 0) -> QueryPlan:
    """``plan`` with every image larger than ``config.size`` replaced by its tiles (see the module
    docstring). Tiles get new image ids (above every image id of the split); each tile's
    :class:`~sam3tune.data.coco.CocoImage` has ``window`` and ``source_id`` set. Dropped and lost objects
    and empty tiles left out are counted in the returned plan's ``problems``; ``tiling`` holds the
    summary."""
    if config.size is None:
        return plan
    problems = copy.deepcopy(plan.problems)
    summary = TilingSummary(config.size, config.overlap, config.min_visible, config.empty_tiles)
    next_id = max((img.image_id for img in plan.split.images), default=0) + 1
    entries: list[ImageQueries | None] = []
    empty: list[int] = []  # positions in entries of the tiles without any object
    for query in plan.images:
        image = query.image
        if image.width <= config.size and image.height <= config.size:
            summary.images_whole += 1
            entries.append(query)
            continue
        summary.images_tiled += 1
        objects = [o for o in plan.split.objects[image.image_id] if o.category_id in plan.categories]
        windows = tile_windows(image.width, image.height, config.size, config.overlap)
        summary.tiles += len(windows)
        boxes = np.array([o.box for o in objects], dtype=np.float64).reshape(-1, 4)
        targeted = np.zeros(len(objects), dtype=bool)
        for window in windows:
            left, top, right, bottom = window
            touching = np.flatnonzero(
                (boxes[:, 0] < right) & (boxes[:, 2] > left) & (boxes[:, 1] < bottom) & (boxes[:, 3] > top)
            )
            tile = CocoImage(
                image_id=next_id,
                file_name=image.file_name,
                path=image.path,
                width=right - left,
                height=bottom - top,
                mode=image.mode,
                window=window,
                source_id=image.image_id,
            )
            next_id += 1
            positives: dict[int, list[CocoObject]] = defaultdict(list)
            present: set[int] = set()  # categories that may not be negatives here
            for index in touching.tolist():
                obj = objects[index]
                clipped, share = clip_object(obj, image, window)
                if clipped is None:
                    continue
                present.add(obj.category_id)
                if obj.iscrowd:
                    continue
                if share + 1e-9 < config.min_visible:
                    summary.object_tiles_dropped += 1
                    problems.add(
                        "tile_object_dropped",
                        f"annotation {obj.annotation_id} on {tile.describe()}: {share:.0%} inside",
                    )
                    continue
                targeted[index] = True
                summary.object_tiles_kept += 1
                summary.object_tiles_clipped += int(share < 1.0 - 1e-9)
                positives[obj.category_id].append(clipped)
            capped = {
                cat: cap_objects(positives[cat], plan.max_objects_per_query, tile, problems)
                for cat in sorted(positives)
            }
            candidates = tuple(c for c in sorted(plan.categories) if c not in present)
            if not present:
                empty.append(len(entries))
            else:
                summary.tiles_with_objects += 1
            if not capped and negative_count(len(candidates), plan.negatives) == 0:
                entries.append(None)  # nothing to ask on this tile
                continue
            entries.append(ImageQueries(tile, capped, candidates))
        for index in np.flatnonzero(~targeted).tolist():
            obj = objects[index]
            if not obj.iscrowd:
                summary.objects_lost += 1
                problems.add(
                    "tile_object_lost",
                    f"annotation {obj.annotation_id} ({image.describe()}), box {[round(v) for v in obj.box]}",
                )
    keep_empty = round(config.empty_tiles * len(empty))
    rng = np.random.default_rng(np.random.SeedSequence([seed, len(empty)]))
    kept = set(rng.choice(len(empty), size=keep_empty, replace=False).tolist()) if keep_empty else set()
    for rank, position in enumerate(empty):
        entry = entries[position]
        if rank in kept and entry is not None:
            summary.empty_tiles_kept += 1
            continue
        summary.empty_tiles_left_out += 1
        if entry is not None:
            problems.add("tile_empty_left_out", entry.image.describe())
        entries[position] = None
    images = [e for e in entries if e is not None]
    return dataclasses.replace(plan, images=images, problems=problems, tiling=summary)
