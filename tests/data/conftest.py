"""Tiny hand-made COCO datasets written into tmp_path, plus a trivial tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

_REPO = Path(__file__).resolve().parents[2]
# The shared real dataset (never committed): beside the checkout, or two levels up for worktrees.
FRUITS_NUTS = next(
    (
        p / "shared" / "data" / "fruits_nuts"
        for p in (_REPO, _REPO.parent, _REPO.parent.parent)
        if (p / "shared" / "data" / "fruits_nuts" / "train").is_dir()
    ),
    Path("/work/shared/data/fruits_nuts"),
)


def word_tokenize(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Ids = word lengths, padded with 0 to the longest prompt (a stand-in for the model's tokenizer)."""
    words = [t.split() for t in texts]
    length = max(len(w) for w in words)
    ids = torch.zeros(len(texts), length, dtype=torch.int64)
    mask = torch.zeros(len(texts), length, dtype=torch.int64)
    for i, ws in enumerate(words):
        ids[i, : len(ws)] = torch.tensor([len(w) for w in ws])
        mask[i, : len(ws)] = 1
    return ids, mask


def write_image(path: Path, width: int, height: int, colour=(120, 60, 30), fmt: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((height, width, 3), colour, dtype=np.uint8)).save(path, format=fmt)


def basic_coco() -> dict:
    """Three 32x24 images, two categories; image 3 is a background image (no annotation)."""
    return {
        "images": [
            {"id": 1, "file_name": "a.png", "width": 32, "height": 24},
            {"id": 2, "file_name": "b.png", "width": 32, "height": 24},
            {"id": 3, "file_name": "c.png", "width": 32, "height": 24},
        ],
        "categories": [{"id": 1, "name": "red_box"}, {"id": 2, "name": "Blue-Dot"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "bbox": [2, 2, 10, 8], "iscrowd": 0,
             "segmentation": [[2, 2, 12, 2, 12, 10, 2, 10]]},
            {"id": 11, "image_id": 1, "category_id": 2, "bbox": [16, 4, 8, 8], "iscrowd": 0,
             "segmentation": [[16, 4, 24, 4, 24, 12, 16, 12]]},
            {"id": 12, "image_id": 2, "category_id": 1, "bbox": [4, 4, 6, 6], "iscrowd": 0,
             "segmentation": [[4, 4, 10, 4, 10, 10, 4, 10]]},
        ],
    }  # fmt: skip


def write_split(folder: Path, coco: dict, make_images: bool = True) -> Path:
    """Write ``coco`` as ``folder/_annotations.coco.json`` with a plain image for each entry."""
    folder.mkdir(parents=True, exist_ok=True)
    if make_images:
        for img in coco.get("images", []):
            name = img["file_name"]
            target = folder / name
            plain = ".." not in name and not name.startswith("/") and name.endswith((".png", ".jpg"))
            if plain and not target.exists() and "width" in img and "height" in img:
                write_image(target, img["width"], img["height"])
    path = folder / "_annotations.coco.json"
    path.write_text(json.dumps(coco))
    return path


@pytest.fixture
def tokenize():
    return word_tokenize


@pytest.fixture
def basic_split(tmp_path) -> Path:
    """A Roboflow-style root with a ``train`` split holding :func:`basic_coco`; returns the root."""
    write_split(tmp_path / "train", basic_coco())
    return tmp_path
