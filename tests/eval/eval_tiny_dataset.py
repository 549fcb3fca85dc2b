"""Test-only: a tiny Roboflow-layout dataset written to a temporary folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

CATEGORIES = [{"id": 1, "name": "date"}, {"id": 2, "name": "fig"}]


def write_tiny_dataset(root: Path, split: str = "valid", n_images: int = 3) -> Path:
    """``n_images`` 48x64 images with coloured rectangles; image i has one "date" and, for odd
    i, one "fig" (so "fig" also gets negative queries). Returns the split folder."""
    folder = root / split
    folder.mkdir(parents=True)
    images, annotations = [], []
    for i in range(n_images):
        pixels = np.full((48, 64, 3), 90, dtype=np.uint8)
        objects = [(1, (4 + 2 * i, 6, 20, 14))] + ([(2, (36, 24, 18, 16))] if i % 2 else [])
        for category_id, (x, y, w, h) in objects:
            pixels[y : y + h, x : x + w] = (200, 40, 40) if category_id == 1 else (40, 200, 40)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i,
                    "category_id": category_id,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                    "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]],
                }
            )
        Image.fromarray(pixels).save(folder / f"{i}.jpg")
        images.append({"id": i, "file_name": f"{i}.jpg", "height": 48, "width": 64})
    coco = {"images": images, "annotations": annotations, "categories": CATEGORIES}
    (folder / "_annotations.coco.json").write_text(json.dumps(coco))
    return folder
