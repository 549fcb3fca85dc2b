"""COCO ground truth for the metrics: load, validate and shape it for each IoU type.

The metrics read a plain COCO dict (``images`` with ``height``/``width``, ``categories``,
``annotations`` with ``bbox`` xywh pixels and optional ``segmentation`` / ``iscrowd``).
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Sequence
from pathlib import Path

from sam3tune.data import QueryPlan
from sam3tune.data.masks import SegmentationError, validate_segmentation
from sam3tune.errors import UserError
from sam3tune.eval.rle import annotation_rle, mask_areas
from sam3tune.json_file import JsonFileError, read_json

log = logging.getLogger(__name__)

MAX_IMAGE_PIXELS = 2 * 89_478_485
"""Largest image (height x width) ground truth may describe: what Pillow, and so the data loader,
decodes at most; a larger size is a typo or an attempt to make mask decoding exhaust memory."""
_INT64 = 1 << 63


class GroundTruthError(UserError, ValueError):
    """Ground truth that cannot be evaluated (the message names the file and the offending id)."""


def load_ground_truth(path: str | Path) -> dict:
    """Read a COCO annotation file and check what evaluation relies on."""
    path = Path(path)
    try:
        gt = read_json(path, "ground truth")
    except JsonFileError as err:
        raise GroundTruthError(f"cannot read ground truth: {err}") from err
    try:
        check_ground_truth(gt)
    except GroundTruthError as err:
        raise GroundTruthError(f"ground truth {path}: {err}") from err
    return gt


def check_ground_truth(gt: object) -> None:
    """Raise :class:`GroundTruthError` naming the first image/category/annotation that is unusable and
    the field: every field evaluation reads is checked for its type, as the training data reader does."""
    if not isinstance(gt, dict):
        raise GroundTruthError(f"expected a COCO object, got {type(gt).__name__}")
    for key in ("images", "categories", "annotations"):
        if not isinstance(gt.get(key), list):
            got = "missing" if key not in gt else f"a {type(gt[key]).__name__}"
            raise GroundTruthError(f"the top-level {key!r} must be a list, got {got}")
    image_ids = _check_images(gt["images"])
    category_ids = set()
    for category in gt["categories"]:
        if not isinstance(category, dict) or "id" not in category or "name" not in category:
            raise GroundTruthError(f"category {category!r:.80} lacks id or name")
        _check_id(category["id"], "category")
        if not isinstance(category["name"], str):
            name = category["name"]
            raise GroundTruthError(f"category {category['id']}: name {name!r:.40} is not a string")
        category_ids.add(category["id"])
    annotation_ids: set[int] = set()
    for ann in gt["annotations"]:
        _check_annotation(ann, annotation_ids, image_ids, category_ids)


def _check_images(images: list) -> set[int]:
    image_ids = set()
    for image in images:
        if not isinstance(image, dict) or not all(k in image for k in ("id", "height", "width")):
            raise GroundTruthError(f"image {image!r:.80} lacks id, height or width")
        _check_id(image["id"], "image")
        height, width = image["height"], image["width"]
        if not (_is_int(height) and _is_int(width) and height > 0 and width > 0):
            raise GroundTruthError(f"image {image['id']} has no positive integer height and width")
        if height * width > MAX_IMAGE_PIXELS:
            raise GroundTruthError(
                f"image {image['id']} claims {width}x{height} pixels, more than the {MAX_IMAGE_PIXELS} "
                "an image may have"
            )
        if image["id"] in image_ids:
            raise GroundTruthError(f"image id {image['id']} appears twice")
        image_ids.add(image["id"])
    return image_ids


def _check_annotation(ann: object, seen: set[int], image_ids: set[int], category_ids: set[int]) -> None:
    ann_id = ann.get("id") if isinstance(ann, dict) else None
    if ann_id is None or ann_id in seen:
        raise GroundTruthError(f"annotation {ann!r:.80} has no id or a repeated one")
    _check_id(ann_id, "annotation")
    seen.add(ann_id)
    for field, known, what in (("image_id", image_ids, "image"), ("category_id", category_ids, "category")):
        value = ann.get(field)
        if not _is_int(value):
            raise GroundTruthError(f"annotation {ann_id}: {field} {value!r:.40} is not an integer id")
        if value not in known:
            raise GroundTruthError(f"annotation {ann_id}: {field} {value} is no {what} of the file")
    bbox = ann.get("bbox")
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_finite(v) for v in bbox)):
        raise GroundTruthError(f"annotation {ann_id}: bbox {bbox!r:.60} is not 4 finite numbers [x, y, w, h]")
    if bbox[2] < 0 or bbox[3] < 0:
        raise GroundTruthError(f"annotation {ann_id}: bbox {bbox!r:.60} has a negative width or height")
    crowd = ann.get("iscrowd", 0)
    if not (_is_finite(crowd) and crowd in (0, 1)):
        raise GroundTruthError(f"annotation {ann_id} has iscrowd {crowd!r:.40}; COCO wants 0 or 1")
    area = ann.get("area")
    if area is not None and not (_is_finite(area) and area >= 0):
        raise GroundTruthError(f"annotation {ann_id}: area {area!r:.40} is not a number >= 0")
    segmentation = ann.get("segmentation")
    if segmentation is not None and not isinstance(segmentation, (list, dict)):
        raise GroundTruthError(
            f"annotation {ann_id}: segmentation {segmentation!r:.40} is neither polygons (a list) nor an "
            "RLE (an object with size and counts)"
        )


def _check_id(value: object, what: str) -> None:
    if not _is_int(value) or not -_INT64 <= value < _INT64:
        raise GroundTruthError(f"{what} id {value!r:.40} is not an integer that fits 64 bits")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def has_mask(ann: dict) -> bool:
    """Whether an annotation carries a usable segmentation (polygons or RLE)."""
    seg = ann.get("segmentation")
    if isinstance(seg, dict):
        return "counts" in seg
    return isinstance(seg, list) and any(isinstance(p, list) and len(p) >= 6 for p in seg)


def ground_truth_for(gt: dict, iou_type: str) -> tuple[dict, int]:
    """A copy of ``gt`` ready for ``iou_type`` evaluation, and how many annotations had to be neutralised.

    Annotation ids are renumbered 1..N in the copy: COCO evaluators mark "unmatched" with id 0, so an
    annotation numbered 0 (Roboflow exports count from 0) could never be matched (reports name
    categories and images, never annotation ids). For ``"segm"``, masks are validated and bounded as
    in training (``sam3tune.data.masks``), and annotations without a usable mask (bbox-only, or a mask
    refused) become crowd regions covering their box: a predicted mask inside such a box is ignored
    (neither a true nor a false positive), so objects without masks neither help nor hurt mask AP.
    Missing ``area`` is filled from the box.
    """
    if iou_type not in ("bbox", "segm"):
        raise ValueError(f"unknown IoU type {iou_type!r}; expected 'bbox' or 'segm'")
    out = copy.deepcopy(gt)
    sizes = {img["id"]: (img["height"], img["width"]) for img in out["images"]}
    neutralised = 0
    for number, ann in enumerate(out["annotations"], start=1):
        user_id, ann["id"] = ann["id"], number
        x, y, w, h = ann["bbox"]
        ann.setdefault("iscrowd", 0)
        ann.setdefault("area", float(w * h))
        if iou_type == "segm" and has_mask(ann):
            ann["segmentation"] = _bounded_mask(ann["segmentation"], sizes[ann["image_id"]], user_id)
        if iou_type == "segm" and not has_mask(ann):
            ann["segmentation"] = [[x, y, x + w, y, x + w, y + h, x, y + h]]
            ann["iscrowd"] = 1
            neutralised += 1
    return out, neutralised


def _bounded_mask(
    segmentation: list | dict, size: tuple[int, int], annotation_id: object
) -> list | dict | None:
    """The segmentation validated and bounded for rasterising (polygons clipped, absurd ones refused),
    or None (logged) when it cannot be used."""
    try:
        return validate_segmentation(segmentation, *size).segmentation
    except SegmentationError as err:
        log.warning("ground-truth annotation %s: mask ignored for mask metrics: %s", annotation_id, err)
        return None


def ground_truth_from_plan(plan: QueryPlan) -> dict:
    """The COCO ground truth of an evaluation :class:`~sam3tune.data.QueryPlan`.

    Only what the model is asked about is scored: the plan's usable images and queried categories,
    with every valid object of those (crowd included, uncapped), so that predictions from
    :class:`~sam3tune.data.QueryDataset` and this ground truth describe the same queries.
    """
    images, annotations = [], []
    for query in plan.images:
        image = query.image
        images.append(
            {"id": image.image_id, "file_name": image.file_name, "height": image.height, "width": image.width}
        )
        for obj in plan.split.objects[image.image_id]:
            if obj.category_id not in plan.categories:
                continue
            x0, y0, x1, y1 = obj.box
            ann = {
                "id": obj.annotation_id,
                "image_id": image.image_id,
                "category_id": obj.category_id,
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "iscrowd": int(obj.iscrowd),
                "area": obj.box_area,
            }
            if obj.segmentation is not None:
                ann["segmentation"] = obj.segmentation
                ann["area"] = float(
                    mask_areas([annotation_rle(obj.segmentation, image.height, image.width)])[0]
                )
            annotations.append(ann)
    categories = [{"id": c.category_id, "name": c.name} for c in plan.categories.values()]
    return {"images": images, "categories": categories, "annotations": annotations}


def without_unasked_categories(gt: dict, results: Sequence[dict]) -> tuple[dict, list[str]]:
    """``gt`` without the categories that have neither an annotation nor a prediction, and their names.

    A results file does not say which prompts were asked; a category nobody annotated and nothing
    predicted (e.g. Roboflow's placeholder category) was most likely never asked, and keeping it
    would add one true-negative (image, prompt) pair per image to cgF1 and specificity.
    """
    used = {a["category_id"] for a in gt["annotations"]} | {r["category_id"] for r in results}
    dropped = [c["name"] for c in gt["categories"] if c["id"] not in used]
    if not dropped:
        return gt, []
    kept = {**gt, "categories": [c for c in gt["categories"] if c["id"] in used]}
    return kept, dropped
