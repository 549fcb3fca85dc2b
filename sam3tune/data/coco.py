"""Reading one COCO split strictly: every object checked, every problem raised or counted.

``load_split`` turns a COCO annotation file (or a YOLO split, read by :mod:`sam3tune.data.yolo`
into the same structure) plus its image folder into a :class:`CocoSplit`:
usable images (file present, decodable, real size = JSON size after EXIF orientation), their
objects with boxes clipped to the image (``xyxy`` pixels) and validated segmentations, all
categories, and a :class:`~sam3tune.data.problems.ProblemReport`. Fatal problems raise
:class:`~sam3tune.data.problems.DataError` naming the file and the image / annotation id.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from sam3tune.data.images import ImageFileError, ImageInfo, probe_image
from sam3tune.data.layout import SplitFiles, image_path
from sam3tune.data.masks import Segmentation, SegmentationError, validate_segmentation
from sam3tune.data.problems import DataError, ProblemReport
from sam3tune.data.yolo import read_yolo_split

_REQUIRED_KEYS = ("images", "annotations", "categories")
_CLIP_TOLERANCE_PX = 1e-3  # coordinates this close outside the image are clipped without a report


@dataclass(frozen=True)
class CocoImage:
    """A usable image: COCO id, ``file_name`` as written, resolved path, size after EXIF orientation."""

    image_id: int
    file_name: str
    path: Path
    width: int
    height: int
    mode: str

    def describe(self) -> str:
        return f"image {self.image_id} {self.file_name!r}"


@dataclass(frozen=True)
class CocoObject:
    """A valid annotation: ``box`` is ``(x0, y0, x1, y1)`` in pixels of its image, clipped to it.

    ``segmentation`` is a validated polygon list / RLE dict, or None (bbox-only or mask dropped).
    """

    annotation_id: int
    category_id: int
    box: tuple[float, float, float, float]
    segmentation: Segmentation | None
    iscrowd: bool

    @property
    def box_area(self) -> float:
        return (self.box[2] - self.box[0]) * (self.box[3] - self.box[1])


@dataclass
class CocoSplit:
    """One split after validation (see module docstring)."""

    name: str
    annotation_file: Path
    image_dir: Path
    images: list[CocoImage]
    objects: dict[int, list[CocoObject]]
    categories: dict[int, str]
    supercategories: dict[int, str]
    problems: ProblemReport = field(default_factory=ProblemReport)
    images_listed: int = 0
    annotations_listed: int = 0


def load_split(files: SplitFiles, progress: bool = True) -> CocoSplit:
    """Parse and validate the split in ``files``; see the module docstring.

    Every image is decoded once (JPEG at 1/8 scale, a few ms) to catch truncated files.
    """
    source = files.annotation_file
    problems = ProblemReport()
    data = read_yolo_split(files.yolo, problems) if files.yolo is not None else _read_json(source)
    categories, supercategories = _parse_categories(data["categories"], source)
    listed_images = _parse_images(data["images"], files)
    annotations = data["annotations"]
    if not listed_images:
        raise DataError("empty_split", f"{source}: the split has no images")
    if not annotations:
        raise DataError(
            "empty_split", f"{source}: the split has no annotations ({len(listed_images)} images)"
        )
    _check_unique_annotation_ids(annotations, source)

    images = _probe_images(listed_images, problems, progress, source)
    if not images:
        raise DataError(
            "no_usable_images",
            f"{source}: none of the {len(listed_images)} images can be used ({_summary(problems)})",
        )
    by_id = {img.image_id: img for img in images}
    objects: dict[int, list[CocoObject]] = {img.image_id: [] for img in images}
    for index, ann in enumerate(annotations):
        obj = _parse_annotation(ann, index, listed_images, by_id, categories, problems)
        if obj is not None:
            objects[ann["image_id"]].append(obj)
    if not any(not o.iscrowd for objs in objects.values() for o in objs):
        crowd = sum(o.iscrowd for objs in objects.values() for o in objs)
        raise DataError(
            "no_valid_annotations",
            f"{source}: none of the {len(annotations)} annotations is a usable target "
            f"({crowd} crowd; {_summary(problems)})",
        )
    return CocoSplit(
        name=files.name,
        annotation_file=source,
        image_dir=files.image_dir,
        images=images,
        objects=objects,
        categories=categories,
        supercategories=supercategories,
        problems=problems,
        images_listed=len(listed_images),
        annotations_listed=len(annotations),
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError("invalid_json", f"{path}: cannot read the annotation file: {err}") from err
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(
            "invalid_json",
            f"{path}: invalid JSON at line {err.lineno} column {err.colno}: {err.msg} "
            "(truncated or corrupt file?)",
        ) from err
    if not isinstance(data, dict):
        raise DataError(
            "missing_key", f"{path}: top level is a {type(data).__name__}, expected a COCO object"
        )
    for key in _REQUIRED_KEYS:
        if key not in data:
            raise DataError(
                "missing_key",
                f"{path}: missing top-level key {key!r} (COCO needs {', '.join(_REQUIRED_KEYS)})",
            )
        if not isinstance(data[key], list):
            raise DataError(
                "missing_key", f"{path}: top-level {key!r} must be a list, got {type(data[key]).__name__}"
            )
    return data


def _parse_categories(entries: list[Any], source: Path) -> tuple[dict[int, str], dict[int, str]]:
    names: dict[int, str] = {}
    supers: dict[int, str] = {}
    for index, cat in enumerate(entries):
        cat_id = cat.get("id") if isinstance(cat, dict) else None
        if not _is_int(cat_id) or not isinstance(cat.get("name"), str):
            raise DataError(
                "missing_key",
                f"{source}: category entry #{index} ({cat!r:.80}) needs an integer 'id' and a 'name'",
            )
        if cat_id in names:
            raise DataError("duplicate_category_id", f"{source}: category id {cat_id} appears twice")
        names[cat_id] = cat["name"]
        supers[cat_id] = str(cat.get("supercategory") or "")
    return names, supers


def _parse_images(entries: list[Any], files: SplitFiles) -> dict[int, dict[str, Any]]:
    source = files.annotation_file
    images: dict[int, dict[str, Any]] = {}
    for index, entry in enumerate(entries):
        img_id = entry.get("id") if isinstance(entry, dict) else None
        if not _is_int(img_id):
            raise DataError("missing_key", f"{source}: image entry #{index} has no integer 'id'")
        where = f"{source}: image {img_id}"
        if not isinstance(entry.get("file_name"), str):
            raise DataError("missing_key", f"{where} has no 'file_name'")
        for key in ("width", "height"):
            if not _is_int(entry.get(key)) or entry[key] <= 0:
                raise DataError(
                    "missing_key", f"{where} ({entry['file_name']!r}) needs a positive integer {key!r}"
                )
        if img_id in images:
            raise DataError(
                "duplicate_image_id",
                f"{source}: image id {img_id} appears twice "
                f"({images[img_id]['file_name']!r} and {entry['file_name']!r})",
            )
        path = image_path(files.image_dir, entry["file_name"], where)
        images[img_id] = {**entry, "path": path}
    return images


def _check_unique_annotation_ids(annotations: list[Any], source: Path) -> None:
    ids = Counter(a.get("id") for a in annotations if isinstance(a, dict) and _is_int(a.get("id")))
    duplicated = sorted(i for i, n in ids.items() if n > 1)
    if duplicated:
        shown = ", ".join(str(i) for i in duplicated[:10])
        raise DataError(
            "duplicate_annotation_id",
            f"{source}: annotation ids appear more than once: {shown}"
            + (f" (+{len(duplicated) - 10} more)" if len(duplicated) > 10 else ""),
        )


def _probe_images(
    listed: dict[int, dict[str, Any]], problems: ProblemReport, progress: bool, source: Path
) -> list[CocoImage]:
    entries = sorted(listed.values(), key=lambda e: e["id"])

    def probe(entry: dict[str, Any]) -> ImageInfo | ImageFileError:
        try:
            return probe_image(entry["path"])
        except ImageFileError as err:
            return err

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        results = list(
            tqdm(
                pool.map(probe, entries),
                total=len(entries),
                desc=f"checking images of {source.parent.name or source.name}",
                disable=not progress or len(entries) < 200,
                leave=False,
            )
        )
    images = []
    for entry, result in zip(entries, results, strict=True):
        culprit = f"image {entry['id']} {entry['file_name']!r}"
        if isinstance(result, ImageFileError):
            problems.add(result.kind, f"{culprit}: {result}")
            continue
        if (result.width, result.height) != (entry["width"], entry["height"]):
            problems.add(
                "image_size_mismatch",
                f"{culprit}: JSON says {entry['width']}x{entry['height']}, file is "
                f"{result.width}x{result.height} (after EXIF orientation)",
            )
            continue
        if result.needs_conversion:
            problems.add("image_converted", f"{culprit} (mode {result.mode})")
        images.append(
            CocoImage(
                image_id=entry["id"],
                file_name=entry["file_name"],
                path=entry["path"],
                width=result.width,
                height=result.height,
                mode=result.mode,
            )
        )
    return images


def _parse_annotation(
    ann: Any,
    index: int,
    listed: dict[int, dict[str, Any]],
    usable: dict[int, CocoImage],
    categories: dict[int, str],
    problems: ProblemReport,
) -> CocoObject | None:
    if not isinstance(ann, dict) or not _is_int(ann.get("id")):
        problems.add("annotation_malformed", f"annotation entry #{index}: no integer 'id'")
        return None
    ann_id, img_id = ann["id"], ann.get("image_id")
    culprit = f"annotation {ann_id} (image {img_id})"
    if not _is_int(img_id) or img_id not in listed:
        problems.add("annotation_missing_image", f"{culprit}: no image with id {img_id!r}")
        return None
    if not _is_int(ann.get("category_id")) or ann["category_id"] not in categories:
        problems.add(
            "annotation_missing_category", f"{culprit}: no category with id {ann.get('category_id')!r}"
        )
        return None
    if img_id not in usable:
        return None  # the image itself was skipped and counted
    image = usable[img_id]
    bbox = ann.get("bbox")
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_finite(v) for v in bbox)):
        problems.add("annotation_malformed", f"{culprit}: bbox {bbox!r:.60} is not 4 finite numbers")
        return None
    x, y, w, h = (float(v) for v in bbox)
    if w <= 0 or h <= 0:
        problems.add("box_nonpositive", f"{culprit}: bbox [x, y, w, h] = {bbox}")
        return None
    box = (max(x, 0.0), max(y, 0.0), min(x + w, float(image.width)), min(y + h, float(image.height)))
    if box[2] <= box[0] or box[3] <= box[1]:
        problems.add(
            "box_entirely_outside", f"{culprit}: bbox {bbox} outside the {image.width}x{image.height} image"
        )
        return None
    if max(-x, -y, x + w - image.width, y + h - image.height) > _CLIP_TOLERANCE_PX:
        problems.add("box_outside_image", f"{culprit}: bbox {bbox} clipped to {image.width}x{image.height}")
    iscrowd = bool(ann.get("iscrowd", 0))
    segmentation = None
    if not iscrowd:
        try:
            segmentation, dropped = validate_segmentation(ann.get("segmentation"), image.height, image.width)
            if dropped:
                problems.add("polygon_invalid", f"{culprit}: {dropped} polygon part(s) ignored, others kept")
        except SegmentationError as err:
            problems.add(err.kind, f"{culprit}: {err}")
    return CocoObject(
        annotation_id=ann_id,
        category_id=ann["category_id"],
        box=box,
        segmentation=segmentation,
        iscrowd=iscrowd,
    )


def _summary(problems: ProblemReport) -> str:
    """``"18 image_missing, 2 box_nonpositive; e.g. <first culprit of the most common kind>"``."""
    if not problems.counts:
        return "no other problem found"
    ranked = problems.counts.most_common()
    return ", ".join(f"{n} {kind}" for kind, n in ranked) + f"; e.g. {problems.examples[ranked[0][0]][0]}"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
