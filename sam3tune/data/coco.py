"""Reading one COCO split strictly: every object checked, every problem raised or counted.

``load_split`` turns a COCO annotation file (or a YOLO split, read by :mod:`sam3tune.data.yolo`
into the same structure) plus its image folder into a :class:`CocoSplit`:
usable images (file inside the image folder once links are resolved, listed under one id only,
present, decodable, not corrupt, real size = JSON size after EXIF orientation), their objects
(duplicates dropped, ``iscrowd`` 0 or 1) with boxes clipped to the image (``xyxy`` pixels) and
validated, bounded segmentations that cover pixels inside their box, all categories, and a
:class:`~sam3tune.data.problems.ProblemReport`. Fatal problems raise
:class:`~sam3tune.data.problems.DataError` naming the file and the image / annotation id.
"""

from __future__ import annotations

import math
import os
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sam3tune.data.images import LARGE_IMAGE_PIXELS, ImageFileError, ImageInfo, probe_image
from sam3tune.data.layout import SplitFiles, image_path, resolves_inside
from sam3tune.data.masks import Segmentation, SegmentationError, mask_extent, validate_segmentation
from sam3tune.data.problems import DataError, ProblemReport
from sam3tune.data.yolo import read_yolo_split
from sam3tune.json_file import JsonFileError, read_json
from sam3tune.progress import progress_bar

_REQUIRED_KEYS = ("images", "annotations", "categories")
_CLIP_TOLERANCE_PX = 1e-3  # coordinates this close outside the image are clipped without a report
_INT64 = 1 << 63  # ids become int64 tensors: they must lie in [-2**63, 2**63)
MIN_MASK_SHARE_IN_BOX = 0.5
"""A mask whose pixel extent lies less than this share inside its box (grown by 1 px) is ignored."""
_AMBIGUOUS_ORIENTATIONS = (2, 3, 4)  # flips / half turn: the image size is the same in both frames


@dataclass(frozen=True)
class CocoImage:
    """A usable image: COCO id, ``file_name`` as written, resolved path, size after EXIF orientation."""

    image_id: int
    file_name: str
    path: Path
    width: int
    height: int
    mode: str
    window: tuple[int, int, int, int] | None = None
    """A tile (:mod:`sam3tune.data.tiling`): its ``(left, top, right, bottom)`` in the file's pixels;
    ``width`` / ``height`` are then the tile's, ``image_id`` a tile id and ``source_id`` the image's."""
    source_id: int | None = None

    def describe(self) -> str:
        if self.window is not None:
            left, top, right, bottom = self.window
            return (
                f"tile ({left}, {top}, {right}, {bottom}) of image {self.source_id} {self.file_name!r}"
            )
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
    unlabelled: dict[int, frozenset[int]] = field(default_factory=dict)
    """Image id -> categories whose objects a K-shot sample removed from that image
    (:mod:`sam3tune.data.shots`): shown but not labelled there, so neither targets nor negatives."""


def load_split(files: SplitFiles, progress: bool = True, follow_symlinks: bool = False) -> CocoSplit:
    """Parse and validate the split in ``files``; see the module docstring.

    Every image is decoded once (JPEG at 1/8 scale, a few ms) to catch truncated files. Image files
    that resolve (through symlinks) outside ``files.image_dir`` are skipped unless ``follow_symlinks``.
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
    _check_annotation_ids(annotations, source)

    confined = _confined_images(listed_images, files.image_dir, follow_symlinks, problems)
    images = _probe_images(confined, problems, progress, source)
    if not images:
        raise DataError(
            "no_usable_images",
            f"{source}: none of the {len(listed_images)} images can be used ({_summary(problems)})",
        )
    by_id = {img.image_id: img for img in images}
    objects: dict[int, list[CocoObject]] = {img.image_id: [] for img in images}
    first_of: dict[tuple, int] = {}
    for index, ann in enumerate(annotations):
        obj = _parse_annotation(ann, index, listed_images, by_id, categories, problems)
        if obj is None:
            continue
        key = (ann["image_id"], *_identity(obj))
        if key in first_of:
            problems.add(
                "annotation_duplicate",
                f"annotation {obj.annotation_id} (image {ann['image_id']}) "
                f"repeats annotation {first_of[key]}",
            )
            continue
        first_of[key] = obj.annotation_id
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
        data = read_json(path, "annotation file")
    except JsonFileError as err:
        raise DataError("invalid_json", str(err)) from err
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
        _check_id_range(cat_id, f"{source}: category entry #{index}")
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
        _check_id_range(img_id, f"{source}: image entry #{index}")
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


def _check_annotation_ids(annotations: list[Any], source: Path) -> None:
    ids = Counter(a.get("id") for a in annotations if isinstance(a, dict) and _is_int(a.get("id")))
    for ann_id in ids:
        _check_id_range(ann_id, f"{source}: annotation")
    duplicated = sorted(i for i, n in ids.items() if n > 1)
    if duplicated:
        shown = ", ".join(str(i) for i in duplicated[:10])
        raise DataError(
            "duplicate_annotation_id",
            f"{source}: annotation ids appear more than once: {shown}"
            + (f" (+{len(duplicated) - 10} more)" if len(duplicated) > 10 else ""),
        )


def _check_id_range(value: int, where: str) -> None:
    if not -_INT64 <= value < _INT64:
        raise DataError(
            "id_out_of_range", f"{where}: id {value} does not fit a 64-bit integer (|id| < 2**63 needed)"
        )


def _confined_images(
    listed: dict[int, dict[str, Any]], image_dir: Path, follow_symlinks: bool, problems: ProblemReport
) -> dict[int, dict[str, Any]]:
    """The listed images whose file resolves inside ``image_dir`` (all of them with ``follow_symlinks``),
    less the images whose file is also listed under another id (counted, all of them skipped)."""
    kept: dict[int, dict[str, Any]] = {}
    by_file: dict[str, list[int]] = defaultdict(list)
    for img_id, entry in sorted(listed.items()):
        real = os.path.realpath(entry["path"])
        if not follow_symlinks and not resolves_inside(real, image_dir):
            problems.add(
                "image_outside_folder",
                f"image {img_id} {entry['file_name']!r} resolves to {real}, outside {image_dir} "
                "(set data.follow_symlinks: true to allow)",
            )
            continue
        kept[img_id] = entry
        by_file[real].append(img_id)
    for real, ids in by_file.items():
        if len(ids) > 1:
            for img_id in ids:
                problems.add(
                    "image_duplicate_file",
                    f"image {img_id} {listed[img_id]['file_name']!r}: {real} is also image(s) "
                    + ", ".join(str(i) for i in ids if i != img_id),
                )
                del kept[img_id]
    return kept


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
            progress_bar(
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
        if result.orientation in _AMBIGUOUS_ORIENTATIONS or (
            result.orientation != 1 and result.width == result.height
        ):
            problems.add(
                "image_orientation_ambiguous",
                f"{culprit}: EXIF orientation {result.orientation} on a "
                f"{result.width}x{result.height} image; check that its boxes fit the rotated picture",
            )
        if result.width * result.height > LARGE_IMAGE_PIXELS:
            problems.add(
                "image_large",
                f"{culprit}: {result.width}x{result.height} ({result.width * result.height / 1e6:.0f} MP)",
            )
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
    crowd = ann.get("iscrowd")
    if crowd is None or (isinstance(crowd, (int, float)) and crowd in (0, 1)):
        iscrowd = bool(crowd)
    else:
        problems.add("iscrowd_invalid", f"{culprit}: iscrowd = {crowd!r:.40}")
        iscrowd = True  # ignored like a crowd region: neither a target nor a negative
    segmentation = None if iscrowd else _checked_mask(ann.get("segmentation"), box, image, culprit, problems)
    return CocoObject(
        annotation_id=ann_id,
        category_id=ann["category_id"],
        box=box,
        segmentation=segmentation,
        iscrowd=iscrowd,
    )


def _checked_mask(
    segm: Any, box: tuple[float, float, float, float], image: CocoImage, culprit: str, problems: ProblemReport
) -> Segmentation | None:
    """The validated, bounded segmentation of an object with (clipped) ``box``, or None when there is
    none or it cannot be used (counted)."""
    try:
        checked = validate_segmentation(segm, image.height, image.width)
    except SegmentationError as err:
        problems.add(err.kind, f"{culprit}: {err}")
        return None
    if checked.dropped:
        problems.add("polygon_invalid", f"{culprit}: {checked.dropped} polygon part(s) ignored, others kept")
    if checked.clipped:
        problems.add(
            "polygon_clipped",
            f"{culprit}: clipped to one image side around the {image.width}x{image.height} image",
        )
    if checked.segmentation is None:
        return None
    area, (x0, y0, x1, y1) = mask_extent(checked.segmentation, image.height, image.width)
    if area == 0:
        problems.add(
            "mask_empty", f"{culprit}: the mask covers no pixel of the {image.width}x{image.height} image"
        )
        return None
    inside_w = max(0.0, min(x1, box[2] + 1) - max(x0, box[0] - 1))
    inside_h = max(0.0, min(y1, box[3] + 1) - max(y0, box[1] - 1))
    if inside_w * inside_h < MIN_MASK_SHARE_IN_BOX * (x1 - x0) * (y1 - y0):
        problems.add(
            "mask_box_mismatch",
            f"{culprit}: mask spans x {x0:g}-{x1:g}, y {y0:g}-{y1:g}; box is x {box[0]:g}-{box[2]:g}, "
            f"y {box[1]:g}-{box[3]:g}",
        )
        return None
    return checked.segmentation


def _identity(obj: CocoObject) -> tuple:
    """What makes two annotations of one image the same: category, box, crowd flag and mask."""
    segm = obj.segmentation
    if isinstance(segm, list):
        mask: Any = tuple(tuple(p) for p in segm)
    elif isinstance(segm, dict):
        counts = segm["counts"]
        mask = (tuple(segm["size"]), tuple(counts) if isinstance(counts, list) else counts)
    else:
        mask = None
    return obj.category_id, obj.box, obj.iscrowd, mask


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
