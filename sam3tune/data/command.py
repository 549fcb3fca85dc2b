"""``sam3tune data inspect``, ``sam3tune data convert`` and ``sam3tune data synth``."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sam3tune.config import ConfigError, load_config, with_shortcuts
from sam3tune.data.coco import CocoSplit, load_split
from sam3tune.data.config import DataConfig
from sam3tune.data.inspection import format_report, inspect_dataset
from sam3tune.data.layout import ROBOFLOW_ANNOTATIONS, find_splits
from sam3tune.data.masks import decode_segmentation
from sam3tune.data.semantic import generate_semantic
from sam3tune.data.synth import SynthConfig, generate
from sam3tune.errors import on_path
from sam3tune.output_files import WriteError, write_text_atomic, writing
from sam3tune.progress import progress_bar


def run_inspect_command(
    path: Path,
    config: str | None = None,
    overrides: Sequence[str] = (),
    as_json: bool = False,
    images: Path | None = None,
) -> int:
    """Inspect the dataset at ``path`` (root, split folder or COCO JSON; ``images``: the image folder of a
    JSON file) read with the :class:`DataConfig` of the ``config`` file and ``key=value`` overrides; print
    the report (text or JSON). Exit status 0 when every split is usable, 1 when one is not; bad input
    raises a :class:`~sam3tune.errors.UserError` (status 2)."""
    settings = load_config(DataConfig, config, overrides)
    report = inspect_dataset(path, settings, images, progress=not as_json)
    sys.stdout.write((json.dumps(report, indent=2) if as_json else format_report(report)) + "\n")
    return 0 if report["ok"] else 1


def run_synth_command(
    out: Path,
    config: str | None = None,
    overrides: Sequence[str] = (),
    images: int | None = None,
    semantic: bool = False,
) -> int:
    """Write the synthetic dataset of the :class:`SynthConfig` from the ``config`` file, ``key=value``
    overrides, then ``images`` (``images`` training images, a quarter of that, at least 1, for valid and
    test) under ``out``; with ``semantic``, as label maps + ``semantic.yaml`` (docs/semantic.md). Exit
    status 0; bad input raises a :class:`~sam3tune.errors.UserError` (status 2)."""
    splits = None
    if images is not None:
        held_out = max(1, images // 4)
        splits = [["train", images], ["valid", held_out], ["test", held_out]]
    if images is not None and images < 1:
        raise ConfigError(f"--images must be at least 1, got {images}")
    settings = load_config(SynthConfig, config, with_shortcuts(overrides, {"splits": splits}))
    with writing(out, "OUT"):
        if semantic:
            for split, count in generate_semantic(settings, out).items():
                print(f"{out / split}: {count} images with label maps")
            return 0
        summary = generate(settings, out)
    for split, count in summary.images.items():
        print(f"{out / split}: {count} images, {summary.objects[split]} objects")
    return 0


def run_convert_command(
    path: Path, out: Path, to: str = "coco", images: Path | None = None, bbox_format: str = "xywh"
) -> int:
    """Write every split of the dataset at ``path`` (``images``: the image folder of a COCO JSON file)
    as ``out/<split>/_annotations.coco.json`` with its images beside it (hard links where possible, else
    copies): the Roboflow COCO layout. ``bbox_format``: how a Hugging Face dataset's boxes are written.

    The JSON holds what sam3tune reads from the source after validation: usable images, valid objects
    (boxes clipped to the image, areas of the rasterised masks, or of the box for box-only objects),
    every category. Returns 0; bad input or a non-empty ``out`` raises a :class:`~sam3tune.errors.UserError`.
    """
    if to != "coco":
        raise ConfigError(f"--to {to!r}: only coco is written")
    with on_path(out, "read", "--out"):
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise WriteError(f"--out {out} exists and is not empty; choose a new folder", path=out)
    with on_path(path, "read", "PATH"):
        found = find_splits(path, images, bbox_format)
    splits = [load_split(files) for files in found]
    for split in splits:
        folder = out / split.name
        with writing(folder, "--out"):
            folder.mkdir(parents=True, exist_ok=True)
        for image in progress_bar(split.images, desc=f"images of {split.name}", leave=False):
            target = folder / image.file_name
            with writing(target, "--out"):
                target.parent.mkdir(parents=True, exist_ok=True)
                _link_or_copy(image.path, target)
        write_text_atomic(folder / ROBOFLOW_ANNOTATIONS, json.dumps(split_as_coco(split)))
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
