"""Evaluation on real exports and hostile ground truth (issue 14, classes 1 and 7).

Roboflow numbers annotations from 0; COCO evaluators mark "unmatched" with annotation id 0, so before
the fix the ground truth given back as predictions scored below 1. Every evaluation path renumbers.
"""

from __future__ import annotations

import copy
import json
import shutil

import pytest
from faster_coco_eval import COCO, COCOeval_faster

from sam3tune.data import DataConfig, build_eval_dataset
from sam3tune.eval.api import evaluate_results_file
from sam3tune.eval.coco_results import ResultsError, load_coco_results
from sam3tune.eval.evaluate import evaluate_predictions
from sam3tune.eval.ground_truth import (
    GroundTruthError,
    check_ground_truth,
    ground_truth_for,
    ground_truth_from_plan,
    load_ground_truth,
)
from sam3tune.eval.rle import annotation_rle
from tests.data.conftest import FRUITS_NUTS

pytestmark = pytest.mark.skipif(not (FRUITS_NUTS / "train").is_dir(), reason="fruits_nuts not available")


def _fruits_from_zero() -> dict:
    """fruits_nuts train ground truth with annotation ids 0..N-1, as Roboflow writes them."""
    gt = json.loads((FRUITS_NUTS / "train" / "_annotations.coco.json").read_text())
    gt["annotations"].sort(key=lambda a: a["id"])
    for number, ann in enumerate(gt["annotations"]):
        ann["id"] = number
    return gt


def _perfect(gt: dict) -> list[dict]:
    """Every ground-truth object given back as a detection of score 1 (box and mask)."""
    sizes = {img["id"]: (img["height"], img["width"]) for img in gt["images"]}
    results = []
    for ann in gt["annotations"]:
        rle = annotation_rle(ann["segmentation"], *sizes[ann["image_id"]])
        counts = rle["counts"].decode() if isinstance(rle["counts"], bytes) else rle["counts"]
        results.append(
            {
                "image_id": ann["image_id"],
                "category_id": ann["category_id"],
                "bbox": ann["bbox"],
                "score": 1.0,
                "segmentation": {"size": list(rle["size"]), "counts": counts},
            }
        )
    return results


def _raw_box_ap(gt: dict, results: list[dict]) -> float:
    prepared = copy.deepcopy(gt)
    for ann in prepared["annotations"]:
        ann.setdefault("iscrowd", 0)
    coco_gt = COCO(prepared, print_function=lambda *a: None)
    evaluator = COCOeval_faster(
        coco_gt, coco_gt.loadRes(copy.deepcopy(results)), iouType="bbox", print_function=lambda *a: None
    )
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return float(evaluator.stats[0])


@pytest.mark.filterwarnings("ignore:Found annotation id 0")
def test_perfect_predictions_score_exactly_one_with_ids_from_zero():
    gt = _fruits_from_zero()
    assert min(a["id"] for a in gt["annotations"]) == 0
    results = _perfect(gt)
    assert _raw_box_ap(gt, results) < 0.999  # the evaluator alone: annotation 0 never matches
    metrics = evaluate_predictions(gt, results)
    assert metrics.coco["bbox"].AP == 1.0 and metrics.coco["segm"].AP == 1.0
    assert all(v["AP"] == 1.0 for v in metrics.coco["bbox"].per_category.values())
    assert [a["id"] for a in gt["annotations"]][:3] == [0, 1, 2]  # the caller's ground truth is untouched


def test_evaluate_results_file_scores_one_with_ids_from_zero(tmp_path):
    gt = _fruits_from_zero()
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "predictions.json").write_text(json.dumps(_perfect(gt)))
    metrics, _ = evaluate_results_file(tmp_path / "predictions.json", tmp_path / "gt.json", tmp_path / "out")
    assert metrics.coco["bbox"].AP == 1.0 and metrics.coco["segm"].AP == 1.0
    assert json.loads((tmp_path / "out" / "eval.json").read_text())["model"]["summary"]["bbox_AP"] == 1.0


def test_validation_ground_truth_from_a_plan_scores_one_with_ids_from_zero(tmp_path):
    split = tmp_path / "valid"
    shutil.copytree(FRUITS_NUTS / "train", split)
    (split / "_annotations.coco.json").write_text(json.dumps(_fruits_from_zero()))
    dataset = build_eval_dataset(DataConfig(root=tmp_path, val="valid", resolution=64), progress=False)
    gt = ground_truth_from_plan(dataset.plan)  # what training validation and model eval score against
    assert min(a["id"] for a in gt["annotations"]) == 0
    metrics = evaluate_predictions(gt, _perfect(gt))
    assert metrics.coco["bbox"].AP == 1.0 and metrics.coco["segm"].AP == 1.0


def _tiny_gt(segmentation) -> dict:
    return {
        "images": [{"id": 0, "height": 24, "width": 32}],
        "categories": [{"id": 1, "name": "thing"}],
        "annotations": [
            {"id": 0, "image_id": 0, "category_id": 1, "bbox": [2, 2, 10, 8], "segmentation": segmentation},
            {
                "id": 1,
                "image_id": 0,
                "category_id": 1,
                "bbox": [14, 2, 10, 8],
                "segmentation": [[14, 2, 24, 2, 24, 10, 14, 10]],
            },
        ],
    }


def test_ground_truth_polygon_with_huge_coordinates_becomes_an_ignore_region(caplog):
    gt = _tiny_gt([[2, 2, 1e12, 2, 1e12, 1e12]])
    prepared, neutralised = ground_truth_for(gt, "segm")
    assert neutralised == 1
    bad = prepared["annotations"][0]
    assert bad["iscrowd"] == 1 and max(bad["segmentation"][0]) == 12  # its box, not the polygon
    assert "ground-truth annotation 0: mask ignored" in caplog.text
    assert [a["id"] for a in prepared["annotations"]] == [1, 2]
    metrics = evaluate_predictions(gt, _perfect({**gt, "annotations": gt["annotations"][1:]}))
    assert metrics.coco["segm"].AP == 1.0


def test_ground_truth_polygon_far_out_is_clipped_for_rasterising():
    prepared, neutralised = ground_truth_for(_tiny_gt([[2, 2, 200, 2, 200, 10, 2, 10]]), "segm")
    assert neutralised == 0
    assert max(prepared["annotations"][0]["segmentation"][0]) <= 32 + 32


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (lambda gt: gt["images"][0].update(height=10**6, width=10**6), "image 0 claims 1000000x1000000"),
        (lambda gt: gt["annotations"][1].update(iscrowd="0"), "annotation 1 has iscrowd '0'"),
        (lambda gt: gt["annotations"][1].update(id=2**64), "annotation id 18446744073709551616"),
        (lambda gt: gt["images"][0].update(height="24"), "image 0 has no positive integer height"),
    ],
)
def test_unusable_ground_truth_is_named(change, fragment):
    gt = _tiny_gt([[2, 2, 12, 2, 12, 10, 2, 10]])
    change(gt)
    with pytest.raises(GroundTruthError, match=fragment.replace("(", r"\(")):
        check_ground_truth(gt)


@pytest.mark.parametrize(
    ("read", "error"), [(load_ground_truth, GroundTruthError), (load_coco_results, ResultsError)]
)
def test_deeply_nested_ground_truth_or_predictions_file_is_a_clear_error(tmp_path, read, error):
    path = tmp_path / "nested.json"
    path.write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(error, match="nested too deeply") as info:
        read(path)
    assert str(path) in str(info.value)
