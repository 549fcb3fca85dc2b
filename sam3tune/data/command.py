"""``sam3tune data convert``: write any dataset the loader reads (YOLO folders, COCO) as a COCO export."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from sam3tune.data.coco import CocoSplit, load_split
from sam3tune.data.layout import ROBOFLOW_ANNOTATIONS, find_splits
from sam3tune.data.masks import decode_segmentation
from sam3tune.data.problems import DataError


def run_convert(path: Path, out: Path, image_dir: Path | None = None) -> int:
    """Write every split of the dataset at ``path`` as ``out/<split>/_annotations.coco.json`` with its
    images beside it (hard links where possible, else copies): the Roboflow COCO layout.

    The JSON holds what sam3tune reads from the source after validation: usable images, valid
    objects (boxes clipped to the image, areas of the rasterised masks, or of the box for box-only
    objects), every category. Returns 0, or 2 with a message on stderr for bad input or a
    non-empty ``out``.
    """
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        print(f"sam3tune data convert: {out} exists and is not empty; choose a new folder", file=sys.stderr)
        return 2
    try:
        splits = [load_split(files) for files in find_splits(path, image_dir)]
    except DataError as err:
        print(f"sam3tune data convert: {err}", file=sys.stderr)
        return 2
    for split in splits:
        folder = out / split.name
        folder.mkdir(parents=True, exist_ok=True)
        for image in tqdm(split.images, desc=f"images of {split.name}", leave=False):
            target = folder / image.file_name
            target.parent.mkdir(parents=True, exist_ok=True)
            _link_or_copy(image.path, target)
        temporary = folder / (ROBOFLOW_ANNOTATIONS + ".tmp")
        temporary.write_text(json.dumps(split_as_coco(split)))
        os.replace(temporary, folder / ROBOFLOW_ANNOTATIONS)
        skipped = sum(split.problems.counts.values())
        print(
            f"{folder / ROBOFLOW_ANNOTATIONS}: {len(split.images)} images, "
            f"{sum(len(v) for v in split.objects.values())} objects, {len(split.categories)} categories"
            + (
                f" ({skipped} problems skipped or fixed: run `sam3tune data inspect {path}`)"
                if skipped
                else ""
            )
        )
    return 0


def split_as_coco(split: CocoSplit) -> dict[str, Any]:
    """The validated split as a COCO dict (bbox xywh pixels, ``area`` of the mask or the box)."""
    annotations = []
    for image in split.images:
        for obj in split.objects[image.image_id]:
            x0, y0, x1, y1 = obj.box
            area = (x1 - x0) * (y1 - y0)
            if obj.segmentation is not None:
                area = float(decode_segmentation(obj.segmentation, image.height, image.width).mask.sum())
            annotations.append(
                {
                    "id": obj.annotation_id,
                    "image_id": image.image_id,
                    "category_id": obj.category_id,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": area,
                    "iscrowd": int(obj.iscrowd),
                    "segmentation": obj.segmentation if obj.segmentation is not None else [],
                }
            )
    return {
        "images": [
            {"id": i.image_id, "file_name": i.file_name, "width": i.width, "height": i.height}
            for i in split.images
        ],
        "categories": [
            {"id": cat_id, "name": name, "supercategory": split.supercategories.get(cat_id, "")}
            for cat_id, name in sorted(split.categories.items())
        ],
        "annotations": annotations,
    }


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
