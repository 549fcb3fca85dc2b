"""A small synthetic dataset in the Roboflow COCO layout, written by the train tests (64 px images of
coloured rectangles with polygon masks; two categories)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

CATEGORIES = [{"id": 1, "name": "red_block"}, {"id": 2, "name": "blue-block"}]
_COLOURS = {1: (220, 30, 30), 2: (30, 60, 220)}


def write_split(directory: Path, count: int, seed: int, size: int = 64) -> None:
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True)
    images, annotations = [], []
    for image_id in range(1, count + 1):
        pixels = rng.integers(90, 160, (size, size, 3), dtype=np.uint8)
        for _ in range(int(rng.integers(1, 3))):
            category = int(rng.integers(1, 3))
            w, h = (int(v) for v in rng.integers(size // 4, size // 2, 2))
            x, y = int(rng.integers(0, size - w)), int(rng.integers(0, size - h))
            pixels[y : y + h, x : x + w] = _COLOURS[category]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": category,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                    "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]],
                }
            )
        name = f"img{image_id:03d}.png"
        Image.fromarray(pixels).save(directory / name)
        images.append({"id": image_id, "file_name": name, "width": size, "height": size})
    coco = {"images": images, "annotations": annotations, "categories": CATEGORIES}
    (directory / "_annotations.coco.json").write_text(json.dumps(coco))


def write_dataset(root: Path, train: int = 8, valid: int = 4, seed: int = 0) -> Path:
    """``root/train`` and ``root/valid`` with ``train`` / ``valid`` images; returns ``root``."""
    write_split(root / "train", train, seed)
    if valid:
        write_split(root / "valid", valid, seed + 1)
    return root
