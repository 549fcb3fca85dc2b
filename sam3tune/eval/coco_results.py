"""COCO results files: a JSON list of ``{image_id, category_id, bbox, score[, segmentation]}``.

``bbox`` is ``[x, y, width, height]`` in original image pixels; ``segmentation`` a compressed RLE.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from sam3tune.errors import UserError
from sam3tune.eval.postprocess import Detections
from sam3tune.eval.rle import rle_problem
from sam3tune.json_file import JsonFileError, read_json
from sam3tune.output_files import write_text_atomic

QueryKey = tuple[int, int]  # (image_id, category_id)


class ResultsError(UserError, ValueError):
    """A COCO results file or entry that cannot be evaluated."""


def save_coco_results(results: Sequence[dict], path: str | Path) -> None:
    """Write results as JSON atomically (temporary file, then rename); a failed write raises
    :class:`~sam3tune.output_files.WriteError` naming ``path``."""
    write_text_atomic(path, json.dumps(list(results)))


def load_coco_results(path: str | Path) -> list[dict]:
    """Read and validate a COCO results file; errors name the file and the entry index."""
    path = Path(path)
    try:
        results = read_json(path, "predictions file")
    except JsonFileError as err:
        raise ResultsError(f"cannot read predictions: {err}") from err
    if not isinstance(results, list):
        raise ResultsError(
            f"predictions {path} must hold a JSON list of detections, got {type(results).__name__}"
        )
    for index, entry in enumerate(results):
        problem = _entry_problem(entry)
        if problem:
            raise ResultsError(f"predictions {path}, entry {index}: {problem}")
    return results


def group_by_query(results: Sequence[dict]) -> dict[QueryKey, list[dict]]:
    """Results grouped by ``(image_id, category_id)``."""
    groups: dict[QueryKey, list[dict]] = defaultdict(list)
    for entry in results:
        groups[int(entry["image_id"]), int(entry["category_id"])].append(entry)
    return dict(groups)


def detections_from_results(entries: Sequence[dict], image_size: tuple[int, int]) -> Detections:
    """The results of one query back as :class:`Detections` (sorted by decreasing score)."""
    entries = sorted(entries, key=lambda e: -float(e["score"]))
    xywh = np.asarray([e["bbox"] for e in entries], dtype=np.float32).reshape(-1, 4)
    boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
    has_masks = bool(entries) and all("segmentation" in e for e in entries)
    return Detections(
        image_size=(int(image_size[0]), int(image_size[1])),
        scores=np.asarray([e["score"] for e in entries], dtype=np.float32),
        boxes=boxes,
        masks=[e["segmentation"] for e in entries] if has_masks else None,
    )


def _entry_problem(entry: object) -> str | None:
    if not isinstance(entry, Mapping):
        return f"expected an object, got {type(entry).__name__}"
    for key in ("image_id", "category_id", "score", "bbox"):
        if key not in entry:
            return f"missing {key!r}"
    for key in ("image_id", "category_id"):
        if isinstance(entry[key], bool) or not isinstance(entry[key], int):
            return f"{key} must be an integer, got {entry[key]!r}"
    score = entry["score"]
    if not _is_number(score):
        return f"score must be a finite number, got {score!r}"
    if not 0 <= score <= 1:
        return f"score must be in [0, 1] (a probability), got {score!r}"
    bbox = entry["bbox"]
    if not isinstance(bbox, list) or len(bbox) != 4 or not all(_is_number(v) for v in bbox):
        return f"bbox must be [x, y, width, height] of finite numbers, got {bbox!r}"
    if bbox[2] < 0 or bbox[3] < 0:
        return f"bbox has a negative width or height: {bbox!r}"
    if "segmentation" in entry:
        return rle_problem(entry["segmentation"])
    return None


def check_results_against(results: Sequence[dict], gt: Mapping, path: str | Path) -> None:
    """Every entry of ``results`` (read from ``path``) must name an image of the ground truth ``gt``, and
    its segmentation must have that image's size; else :class:`ResultsError` naming the entry."""
    sizes = {image["id"]: [image["height"], image["width"]] for image in gt["images"]}
    for index, entry in enumerate(results):
        size = sizes.get(entry["image_id"])
        if size is None:
            raise ResultsError(
                f"predictions {path}, entry {index}: image_id {entry['image_id']} is not in the ground truth"
            )
        mask_size = entry["segmentation"]["size"] if "segmentation" in entry else size
        if list(mask_size) != size:
            raise ResultsError(
                f"predictions {path}, entry {index}: segmentation size {mask_size} is not the size {size} "
                f"of image {entry['image_id']}"
            )


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
