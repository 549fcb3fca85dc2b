"""Test helper: write a COCO split folder as a YOLO dataset (Ultralytics or Roboflow layout).

Classes are the COCO categories in id order (YOLO class i = i-th category); polygons become
segmentation lines (one per polygon part), bbox-only objects become box lines. Coordinates are
written with full float precision so the polygons survive the round trip exactly.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml


def coco_split_to_yolo(coco_dir: Path, out: Path, split: str = "train", layout: str = "ultralytics") -> None:
    """Write ``coco_dir/_annotations.coco.json`` + its images as split ``split`` of a YOLO dataset in ``out``.

    ``layout``: ``ultralytics`` (images/<split>, labels/<split>, data.yaml with names as a mapping)
    or ``roboflow`` (<split>/images, <split>/labels, data.yaml with ``../<split>/images`` and a names list).
    """
    coco = json.loads((coco_dir / "_annotations.coco.json").read_text())
    categories = sorted(coco["categories"], key=lambda c: c["id"])
    class_of = {c["id"]: i for i, c in enumerate(categories)}
    names = [c["name"] for c in categories]
    if layout == "ultralytics":
        images_dir, labels_dir = out / "images" / split, out / "labels" / split
        data = {"path": ".", "train": f"images/{split}", "names": dict(enumerate(names))}
    else:
        images_dir, labels_dir = out / split / "images", out / split / "labels"
        data = {"train": f"../{split}/images", "nc": len(names), "names": names}
    images_dir.mkdir(parents=True)
    labels_dir.mkdir(parents=True)
    (out / "data.yaml").write_text(yaml.safe_dump(data))
    by_image: dict[int, list[dict]] = {}
    for ann in coco["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    for image in coco["images"]:
        shutil.copy(coco_dir / image["file_name"], images_dir / image["file_name"])
        width, height = image["width"], image["height"]
        lines = []
        for ann in by_image.get(image["id"], []):
            cls = class_of[ann["category_id"]]
            polygons = ann.get("segmentation") or []
            if polygons:
                for polygon in polygons:
                    coords = [v / (width if i % 2 == 0 else height) for i, v in enumerate(polygon)]
                    lines.append(" ".join([str(cls), *(repr(c) for c in coords)]))
            else:
                x, y, w, h = ann["bbox"]
                box = ((x + w / 2) / width, (y + h / 2) / height, w / width, h / height)
                lines.append(" ".join([str(cls), *(repr(c) for c in box)]))
        if lines:
            (labels_dir / Path(image["file_name"]).with_suffix(".txt")).write_text("\n".join(lines) + "\n")
