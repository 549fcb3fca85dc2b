"""Sliced prediction's geometry (``postprocess.tiling``): tile detections back on the whole image, and
the merge of the duplicates that tile borders and overlaps make.

A large image is predicted tile by tile (:func:`predict_sliced`; ``Predictor.predict`` and
``sam3tune eval`` with ``postprocess.tiling`` on call it); each tile's detections are mapped back by its
offset (:func:`region_detections`), optionally joined by the detections of one pass over the whole image
resized (large objects that no tile holds whole), and then merged per prompt (:func:`merge_detections`).

A detection is one of three views of an object: a *whole view* (a tile's detection whose box touches no
tile border inside the image), a *part* (a tile's detection that a border may have cut) or a *coarse
view* (the whole-image pass). Highest score first, each whole or coarse view takes the other whole and
coarse views whose boxes overlap its own by IoU >= ``merge_threshold`` (the same object seen by
overlapping tiles and by the whole-image pass) and the parts that overlap it by ``merge_metric`` >=
``merge_threshold`` (``ios``, intersection over the smaller box: the part of an object that a border
cut off joins its whole; or ``iou``). The parts no view took grow groups of their own against the union
of their boxes (so the four corners of an object cut by two borders end in one detection, though two of
them may overlap little). A group's box is that of its best whole view (tile resolution), else the union
of its members' boxes; the mask is the union of the masks, the score the highest. Then the usual
postprocessing: optional NMS and at most ``max_detections``.

Only parts merge by intersection over the smaller box. Merging every detection so (SAHI's greedy
non-maximum merging) lets a small box inside a larger one take it over: the whole-image pass's
detection of a large object merged with a tile's false positive on a piece of it, or with a small object
lying on it, and kept one box of the two; neighbouring small objects merged through a larger false
positive overlapping both (``bench/tiling.py`` measured both, docs/eval.md).

Masks are computed only where they can be: inside the tile for a tile's detection, inside its box for a
detection of the whole-image pass (so no mask is ever upsampled to the whole of a 20,000 px image), in
bands of columns written straight into the whole image's RLE.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from faster_coco_eval.core import mask as coco_mask
from PIL import Image

from sam3tune.data import Batch
from sam3tune.data.regions import PillowRegions, open_regions
from sam3tune.data.tiling import tile_windows
from sam3tune.eval.config import MAX_QUERIES_PER_FORWARD, PostprocessConfig, SlicingConfig
from sam3tune.eval.inference import InferenceModel
from sam3tune.eval.nms import box_ios_xyxy, box_iou_xyxy, nms
from sam3tune.eval.postprocess import Detections, detection_scores
from sam3tune.eval.rle import RLE
from sam3tune.progress import progress_bar

_PIXELS_PER_BAND = 4 * 1024 * 1024  # mask pixels sampled at once (~16 MiB of float32)

Region = tuple[int, int, int, int]
"""``(left, top, right, bottom)`` pixels of the whole image (right, bottom exclusive)."""


def predict_sliced(
    runner: InferenceModel,
    image: Image.Image | str | Path,
    prompts: Sequence[str],
    config: PostprocessConfig,
    progress: bool = False,
    max_queries: int = MAX_QUERIES_PER_FORWARD,
) -> dict[str, Detections]:
    """Detections of every (text) prompt on one image, keyed by prompt, in the image's pixels, predicted
    tile by tile (``config.tiling``): each tile (read by window from the file, see
    :mod:`sam3tune.data.regions`) is resized to the model input and encoded once for all prompts,
    ``tiling.tiles_per_forward`` tiles per forward; with ``tiling.full_image`` the whole image resized once
    too; the detections are mapped back to the image and merged across tile borders (module docstring).
    Memory: the tiles of one forward, never the image as floats; at most ``max_queries`` (tile x prompt)
    queries per forward pass (:meth:`~sam3tune.data.Batch.query_chunks`)."""
    tiling = config.tiling
    if tiling.size is None:
        raise ValueError("sliced prediction needs postprocess.tiling.size (the tile side in pixels)")
    reader = PillowRegions.of(image) if isinstance(image, Image.Image) else open_regions(image)
    with reader:
        width, height = reader.size
        windows = tile_windows(width, height, tiling.size, tiling.overlap)
        parts: dict[str, list[Detections]] = {p: [] for p in prompts}
        chunks = range(0, len(windows), tiling.tiles_per_forward)
        for start in progress_bar(chunks, desc="tiles", unit="batch", disable=not progress, leave=False):
            chunk = windows[start : start + tiling.tiles_per_forward]
            tiles = [reader.read(window, at_least=runner.image_size) for window in chunk]
            for row, outputs, local in _forward_rows(runner, runner.batch(tiles, prompts), max_queries):
                t, k = divmod(row, len(prompts))
                found = region_detections(outputs, local, chunk[t], (height, width), config)
                parts[prompts[k]].append(found)
        whole_pass = tiling.full_image and len(windows) > 1
        if whole_pass:
            overview = runner.batch([reader.overview(runner.image_size)], prompts)
            whole = (0, 0, width, height)
            for k, outputs, local in _forward_rows(runner, overview, max_queries):
                parts[prompts[k]].append(
                    region_detections(outputs, local, whole, (height, width), config, mask_inside_box=True)
                )
    regions = [*windows, *([None] if whole_pass else [])]
    return {prompt: merge_detections(parts[prompt], config, regions) for prompt in prompts}


def _forward_rows(
    runner: InferenceModel, batch: Batch, max_queries: int
) -> Iterator[tuple[int, dict[str, torch.Tensor], int]]:
    """``(row of batch, outputs of its forward piece, row within the piece)`` for every query of ``batch``,
    in order, with at most ``max_queries`` queries per forward pass."""
    row = 0
    for piece in batch.query_chunks(max_queries):
        outputs = runner.forward(piece)
        for local in range(piece.num_queries):
            yield row, outputs, local
            row += 1


def region_mask_rle(
    logits: torch.Tensor,
    region: Region,
    crop: Region,
    image_size: tuple[int, int],
    threshold: float,
) -> RLE:
    """A mask of the whole ``image_size`` image as compressed RLE, from mask ``logits`` ``(h, w)`` that
    cover ``region`` of the image, evaluated only inside ``crop`` (zero elsewhere).

    Each pixel takes the bilinear sample (``align_corners=False``, edges clamped: what upsampling the
    logits to the region's size gives) and is set when ``sigmoid > threshold``. Sampled in bands of
    columns, written straight into the image's column-major runs."""
    height, width = image_size
    left, top, right, bottom = region
    x0, y0, x1, y1 = (max(crop[0], left), max(crop[1], top), min(crop[2], right), min(crop[3], bottom))
    logit_threshold = math.log(threshold / (1.0 - threshold))
    starts: list[np.ndarray] = []
    ends: list[np.ndarray] = []
    if x1 > x0 and y1 > y0:
        source = logits.float()[None, None]
        rows = torch.arange(y0, y1, dtype=torch.float32, device=logits.device)
        grid_y = (2 * (rows - top) + 1) / (bottom - top) - 1
        band = max(1, _PIXELS_PER_BAND // (y1 - y0))
        for c0 in range(x0, x1, band):
            c1 = min(x1, c0 + band)
            cols = torch.arange(c0, c1, dtype=torch.float32, device=logits.device)
            grid_x = (2 * (cols - left) + 1) / (right - left) - 1
            grid = torch.stack(torch.meshgrid(grid_x, grid_y, indexing="ij"), dim=-1)  # (cols, rows, 2)
            sampled = F.grid_sample(
                source, grid[None], mode="bilinear", padding_mode="border", align_corners=False
            )
            on = (sampled[0, 0] > logit_threshold).cpu().numpy()  # (cols, rows): column-major already
            padded = np.zeros((on.shape[0], on.shape[1] + 2), dtype=np.int8)
            padded[:, 1:-1] = on
            change = np.diff(padded, axis=1)
            col_s, row_s = np.nonzero(change == 1)
            col_e, row_e = np.nonzero(change == -1)
            starts.append((c0 + col_s).astype(np.int64) * height + y0 + row_s)
            ends.append((c0 + col_e).astype(np.int64) * height + y0 + row_e)
    return runs_rle(
        np.concatenate(starts) if starts else np.zeros(0, np.int64),
        np.concatenate(ends) if ends else np.zeros(0, np.int64),
        height,
        width,
    )


def runs_rle(starts: np.ndarray, ends: np.ndarray, height: int, width: int) -> RLE:
    """Compressed RLE of a ``height x width`` mask set on the column-major index ranges
    ``[starts[i], ends[i])`` (sorted, not overlapping)."""
    if len(starts):
        joined = np.flatnonzero(starts[1:] != ends[:-1]) + 1  # merge runs that touch across columns
        starts = starts[np.concatenate([[0], joined])]
        ends = ends[np.concatenate([joined - 1, [len(ends) - 1]])]
    edges = np.stack([starts, ends], axis=1).reshape(-1)
    counts = np.diff(np.concatenate([[0], edges, [height * width]])).tolist()
    rle = coco_mask.frPyObjects({"size": [height, width], "counts": [int(c) for c in counts]}, height, width)
    counts = rle["counts"]
    return {"size": [height, width], "counts": counts.decode() if isinstance(counts, bytes) else counts}


def region_detections(
    outputs: dict[str, torch.Tensor],
    row: int,
    region: Region,
    image_size: tuple[int, int],
    config: PostprocessConfig,
    mask_inside_box: bool = False,
) -> Detections:
    """The detections of query ``row`` of ``outputs`` whose canvas showed ``region`` of the whole image
    (a tile, or the whole image for the full-image pass), in the whole image's pixels: score threshold,
    at most ``max_detections``; boxes clipped to the region; masks (``config.with_masks``) inside the
    region, or inside each box with ``mask_inside_box``."""
    left, top, right, bottom = region
    scores = detection_scores(outputs)[row]
    cx, cy, w, h = outputs["pred_boxes"][row].float().unbind(-1)
    rw, rh = right - left, bottom - top
    boxes = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)
    boxes = boxes * boxes.new_tensor([rw, rh, rw, rh]) + boxes.new_tensor([left, top, left, top])
    low, high = boxes.new_tensor([left, top, left, top]), boxes.new_tensor([right, bottom, right, bottom])
    boxes = torch.minimum(torch.maximum(boxes, low), high)
    keep = torch.nonzero(scores >= config.score_threshold).squeeze(1)
    keep = keep[torch.argsort(scores[keep], descending=True, stable=True)][: config.max_detections]
    masks = None
    if config.with_masks:
        masks = []
        for index in keep.tolist():
            crop = region
            if mask_inside_box:
                x0, y0, x1, y1 = boxes[index].tolist()
                crop = (math.floor(x0), math.floor(y0), math.ceil(x1), math.ceil(y1))
            logits = outputs["pred_masks"][row, index]
            masks.append(region_mask_rle(logits, region, crop, image_size, config.mask_threshold))
    return Detections(
        image_size=(int(image_size[0]), int(image_size[1])),
        scores=scores[keep].cpu().numpy(),
        boxes=boxes[keep].cpu().numpy(),
        masks=masks,
    )


def cut_by_border(boxes: np.ndarray, region: Region, image_size: tuple[int, int], tolerance: float = 1.0):
    """``(N,)`` bool: boxes (xyxy pixels of the image) that reach a border of ``region`` lying inside the
    image (within ``tolerance`` px), i.e. whose object the region may have cut off."""
    height, width = image_size
    left, top, right, bottom = region
    boxes = boxes.reshape(-1, 4)
    return (
        ((left > 0) & (boxes[:, 0] <= left + tolerance))
        | ((top > 0) & (boxes[:, 1] <= top + tolerance))
        | ((right < width) & (boxes[:, 2] >= right - tolerance))
        | ((bottom < height) & (boxes[:, 3] >= bottom - tolerance))
    )


def merge_detections(
    parts: Sequence[Detections], config: PostprocessConfig, regions: Sequence[Region | None] | None = None
) -> Detections:
    """One prompt's detections from every tile (and the full-image pass) of one image, merged (module
    docstring), then optional NMS and at most ``max_detections``, highest score first.

    ``regions``: the region each part came from (None: the whole-image pass); without them every
    detection counts as a part that a border may have cut."""
    image_size = parts[0].image_size
    scores = np.concatenate([p.scores for p in parts]).astype(np.float32)
    boxes = np.concatenate([p.boxes.reshape(-1, 4) for p in parts]).astype(np.float32)
    if regions is None:
        cut, coarse = np.ones(len(scores), dtype=bool), np.zeros(len(scores), dtype=bool)
    else:
        cut = np.concatenate(
            [
                np.zeros(len(p), dtype=bool) if r is None else cut_by_border(p.boxes, r, image_size)
                for p, r in zip(parts, regions, strict=True)
            ]
        )
        coarse = np.concatenate([np.full(len(p), r is None) for p, r in zip(parts, regions, strict=True)])
    order = np.argsort(-scores, kind="stable")[: config.tiling.merge_pool]
    groups = _merge_groups(torch.from_numpy(boxes[order]), cut[order], config.tiling)
    out_scores, out_boxes = [], []
    for group in groups:
        members = order[group]
        views = [m for m in members if not cut[m] and not coarse[m]]  # whole views at tile resolution
        out_scores.append(scores[members].max())
        if views:
            out_boxes.append(boxes[views[0]])
        else:
            out_boxes.append(np.concatenate([boxes[members, :2].min(0), boxes[members, 2:].max(0)]))
    result_scores = np.asarray(out_scores, dtype=np.float32).reshape(-1)
    result_boxes = np.asarray(out_boxes, dtype=np.float32).reshape(-1, 4)
    keep = np.argsort(-result_scores, kind="stable")
    if config.nms_iou_threshold is not None and len(keep) > 1:
        kept = nms(
            torch.from_numpy(result_boxes[keep]),
            torch.from_numpy(result_scores[keep]),
            config.nms_iou_threshold,
        ).numpy()
        keep = keep[kept]
    keep = keep[: config.max_detections]
    masks = None
    if all(p.masks is not None for p in parts):
        every = [m for p in parts for m in p.masks]
        masks = [_union_mask([every[m] for m in order[groups[k]]], image_size) for k in keep.tolist()]
    return Detections(
        image_size=image_size, scores=result_scores[keep], boxes=result_boxes[keep], masks=masks
    )


def _merge_groups(boxes: torch.Tensor, cut: np.ndarray, tiling: SlicingConfig) -> list[list[int]]:
    """Groups of indices into ``boxes`` (``(N, 4)`` xyxy, highest score first) that are views of one
    object: each whole view (``~cut``), best first, takes the other whole views it overlaps by IoU >=
    ``merge_threshold`` and the cut parts it overlaps by ``merge_metric`` >= ``merge_threshold``; the cut
    parts left grow groups of their own against the union of their boxes."""
    threshold = tiling.merge_threshold
    part_overlap = box_ios_xyxy if tiling.merge_metric == "ios" else box_iou_xyxy
    taken = np.zeros(len(boxes), dtype=bool)
    groups: list[list[int]] = []
    for i in np.flatnonzero(~cut):
        if taken[i]:
            continue
        taken[i] = True
        rest = np.flatnonzero(~taken)
        seed = boxes[i : i + 1]
        same = np.where(
            cut[rest],
            part_overlap(seed, boxes[rest])[0].numpy() >= threshold,
            box_iou_xyxy(seed, boxes[rest])[0].numpy() >= threshold,
        )
        taken[rest[same]] = True
        groups.append([i, *rest[same].tolist()])
    for i in np.flatnonzero(cut):
        if taken[i]:
            continue
        taken[i] = True
        group = [i]
        union = boxes[i : i + 1]
        while True:  # grow the group against the union of its boxes until nothing more overlaps it
            rest = np.flatnonzero(~taken)
            near = rest[part_overlap(union, boxes[rest])[0].numpy() >= threshold] if len(rest) else rest
            if not len(near):
                break
            group += near.tolist()
            taken[near] = True
            members = boxes[group]
            union = torch.cat([members[:, :2].min(dim=0).values, members[:, 2:].max(dim=0).values])[None]
        groups.append(group)
    return groups


def _union_mask(masks: list[RLE], image_size: tuple[int, int]) -> RLE:
    if len(masks) == 1:
        return masks[0]
    union = coco_mask.merge([_binary(m) for m in masks], intersect=False)
    return {"size": list(image_size), "counts": union["counts"].decode()}


def _binary(rle: RLE) -> dict:
    counts = rle["counts"]
    return {"size": list(rle["size"]), "counts": counts.encode() if isinstance(counts, str) else counts}
