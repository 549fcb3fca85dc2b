"""Test-only: Meta's reference cgF1 evaluator (``sam3.eval.cgf1_eval`` from ``sam3==0.1.4``).

The module is loaded from its file so that ``sam3/__init__.py`` (which builds the whole model and
needs torchvision) never runs; the module itself needs only numpy, scipy, pycocotools and tqdm.
Meta's evaluator treats every "image" of its ground truth as one (image, noun phrase) pair, so the
native COCO ground truth is rewritten into that layout first.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
from pathlib import Path

from tests.meta_reference import reference_unavailable


def load_meta_cgf1():
    spec = importlib.util.find_spec("sam3")
    if spec is None or not spec.submodule_search_locations:
        reference_unavailable("Meta's sam3 package is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "eval" / "cgf1_eval.py"
    module_spec = importlib.util.spec_from_file_location("meta_cgf1_eval", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def meta_cgf1(gt: dict, results: list[dict], iou_type: str, workdir: Path) -> dict[str, float]:
    """Meta's cgF1 numbers for native COCO ``gt`` / ``results``, keyed like ``CgF1Metrics.values``."""
    module = load_meta_cgf1()
    pair_id = {}
    images, annotations = [], []
    for image in gt["images"]:
        for category in gt["categories"]:
            pid = len(pair_id) + 1
            pair_id[image["id"], category["id"]] = pid
            images.append(
                {
                    "id": pid,
                    "height": image["height"],
                    "width": image["width"],
                    "file_name": image.get("file_name", ""),
                    "text_input": category["name"],
                    "is_instance_exhaustive": True,
                }
            )
    for ann in gt["annotations"]:
        annotations.append(
            {**ann, "image_id": pair_id[ann["image_id"], ann["category_id"]], "category_id": 1}
        )
    pair_gt = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "object"}]}
    pair_results = [
        {**r, "image_id": pair_id[r["image_id"], r["category_id"]], "category_id": 1} for r in results
    ]
    gt_path, pred_path = workdir / "meta_gt.json", workdir / "meta_pred.json"
    gt_path.write_text(json.dumps(pair_gt))
    pred_path.write_text(json.dumps(pair_results))
    with contextlib.redirect_stdout(io.StringIO()):
        out = module.CGF1Evaluator(str(gt_path), iou_type=iou_type).evaluate(str(pred_path))
    prefix = f"cgF1_eval_{iou_type}_"
    return {key[len(prefix) :]: value for key, value in out.items()}
