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

from sam3tune.data.json_file import JsonFileError, read_json
from sam3tune.eval.postprocess import Detections

QueryKey = tuple[int, int]  # (image_id, category_id)


class ResultsError(ValueError):
    """A COCO results file or entry that cannot be evaluated."""


def save_coco_results(results: Sequence[dict], path: str | Path) -> None:
    """Write results as JSON atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(list(results)))
    tmp.replace(path)


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
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
        return f"score must be a finite number, got {score!r}"
    bbox = entry["bbox"]
    if (
        not isinstance(bbox, list)
        or len(bbox) != 4
        or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in bbox)
    ):
        return f"bbox must be [x, y, width, height] of finite numbers, got {bbox!r}"
    if bbox[2] < 0 or bbox[3] < 0:
        return f"bbox has a negative width or height: {bbox!r}"
    if "segmentation" in entry:
        seg = entry["segmentation"]
        if not (isinstance(seg, Mapping) and "size" in seg and "counts" in seg):
            return "segmentation must be a compressed RLE {'size': [h, w], 'counts': ...}"
    return None
