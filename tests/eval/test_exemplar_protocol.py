"""The exemplar protocol: hand-made predictions with AP worked out by hand, the queries it asks, the CLI."""

import copy
import json

import numpy as np
import pytest
import torch
from eval_tiny_dataset import write_tiny_dataset

from sam3tune.cli import main
from sam3tune.data import DataConfig, build_eval_dataset, collate
from sam3tune.data.synth import SynthConfig, generate
from sam3tune.eval.exemplar_protocol import (
    ExemplarPrompt,
    ExemplarQueries,
    choose_exemplars,
    exemplar_metrics,
    without_exemplars,
)
from sam3tune.model import load_model

GT = {
    "images": [{"id": 1, "height": 100, "width": 100}, {"id": 2, "height": 100, "width": 100}],
    "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "area": 100, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [20, 20, 10, 10], "area": 100, "iscrowd": 0},
        {"id": 3, "image_id": 1, "category_id": 2, "bbox": [40, 40, 10, 10], "area": 100, "iscrowd": 0},
        {"id": 4, "image_id": 2, "category_id": 1, "bbox": [5, 5, 10, 10], "area": 100, "iscrowd": 0},
    ],
}
PROMPTS = [
    ExemplarPrompt(1, 1, 1, (0.0, 0.0, 10.0, 10.0)),
    ExemplarPrompt(1, 2, 3, (40.0, 40.0, 50.0, 50.0)),
    ExemplarPrompt(2, 1, 4, (5.0, 5.0, 15.0, 15.0)),
]


def _det(image_id, category_id, bbox, score):
    return {"image_id": image_id, "category_id": category_id, "bbox": bbox, "score": score}


RESULTS = [
    _det(1, 1, [0, 0, 10, 10], 0.9),  # the exemplar itself
    _det(1, 1, [20, 20, 10, 10], 0.8),  # the other "a" on image 1
    _det(1, 2, [41, 41, 10, 10], 0.9),  # the exemplar of "b" (IoU 0.68)
    _det(2, 1, [5, 5, 10, 10], 0.9),  # the exemplar of image 2
    _det(2, 1, [60, 60, 10, 10], 0.85),  # a false positive, scored above the other "a"
]


def test_kept_and_others_ap_by_hand():
    gt_before, results_before = copy.deepcopy(GT), copy.deepcopy(RESULTS)
    metrics = exemplar_metrics(GT, RESULTS, PROMPTS, ["bbox"])
    assert gt_before == GT and results_before == RESULTS
    kept, others = metrics.kept["bbox"], metrics.others["bbox"]
    # kept, "a": TP .9, TP .9, FP .85, TP .8 -> precision 1 up to recall 2/3 (67 of the 101 recall
    # points), 3/4 after (34 points)
    assert kept.per_category["a"]["AP50"] == pytest.approx((67 + 34 * 0.75) / 101)
    assert kept.per_category["b"]["AP50"] == pytest.approx(1.0)
    # others: GT "a" = object 2 only; detections left: FP .85, TP .8 -> precision 1/2 at every recall
    assert others.per_category["a"]["AP50"] == pytest.approx(0.5)
    assert others.per_category["b"]["AP50"] is None  # its only object was the exemplar
    assert pytest.approx(0.5) == others.AP50 and metrics.excluded == 3 and metrics.queries == 3


def test_only_detections_of_the_exemplar_query_that_overlap_it_are_excluded():
    results = [
        _det(1, 1, [0, 0, 10, 10], 0.9),
        _det(1, 1, [0, 0, 10, 20], 0.7),  # IoU 0.5 with the exemplar: excluded (>= 0.5)
        _det(1, 1, [0, 0, 10, 21], 0.6),  # IoU 0.476: kept
        _det(1, 2, [0, 0, 10, 10], 0.5),  # another query on the same box: kept
    ]
    gt, kept, excluded = without_exemplars(GT, results, PROMPTS, exclude_iou=0.5)
    assert excluded == 2 and [r["score"] for r in kept] == [0.6, 0.5]
    assert sorted(a["id"] for a in gt["annotations"]) == [2]


def test_choice_is_seeded_per_image_and_category(tmp_path):
    generate(
        SynthConfig(image_size=(64, 64), objects_per_image=(3, 5), splits=(("valid", 6),)),
        tmp_path,
        progress=False,
    )
    dataset = build_eval_dataset(DataConfig(root=tmp_path, resolution=64), progress=False)
    plan = dataset.plan
    prompts = choose_exemplars(plan, seed=0)
    pairs = [(q.image.image_id, c) for q in plan.images for c in q.positives]
    assert [(p.image_id, p.category_id) for p in prompts] == pairs
    objects = {o.annotation_id: o for q in plan.images for objs in q.positives.values() for o in objs}
    assert all(objects[p.annotation_id].category_id == p.category_id for p in prompts)
    assert all(tuple(objects[p.annotation_id].box) == p.box for p in prompts)
    assert choose_exemplars(plan, seed=0) == prompts
    assert choose_exemplars(plan, seed=1) != prompts  # some category has several objects


def test_exemplar_queries_ask_positive_categories_with_their_box(tmp_path):
    write_tiny_dataset(tmp_path)
    dataset = build_eval_dataset(DataConfig(root=tmp_path, resolution=32, masks=False), progress=False)
    prompts = choose_exemplars(dataset.plan, seed=3)
    queries = ExemplarQueries(dataset, prompts)
    assert len(queries) == 3  # every image has a "date"
    samples = [queries[i] for i in range(len(queries))]
    assert [s.category_ids for s in samples] == [[1], [1, 2], [1]]  # "fig" only where it is
    assert all(p == "visual" for s in samples for p in s.prompts)
    for sample in samples:  # one object per category here: the exemplar box is the target box
        for box, target in zip(sample.exemplar_boxes, sample.targets, strict=True):
            torch.testing.assert_close(box, target["boxes"])
    batch = collate(samples, load_model("tiny").tokenize)
    assert batch.exemplar_labels.tolist() == [[1]] * 4
    texts = ExemplarQueries(dataset, prompts, keep_text=True)[1].prompts
    assert texts == ["date", "fig"]


def test_eval_cli_reports_exemplar_ap_next_to_text_ap(tmp_path):
    write_tiny_dataset(tmp_path / "data")
    out = tmp_path / "report"
    common = ["device=cpu", "num_workers=0", "exemplars.enabled=true"]
    args = [
        "eval",
        "--model",
        "tiny",
        "baseline=tiny",
        "--data",
        str(tmp_path / "data"),
        "--out",
        str(out),
    ]
    assert main([*args, *common]) == 0
    report = json.loads((out / "eval.json").read_text())
    summary = report["model"]["summary"]
    exemplar = report["model"]["metrics"]["exemplar"]
    assert exemplar["queries"] == 4 and exemplar["seed"] == 0
    for key in ("exemplar_bbox_AP50", "exemplar_others_bbox_AP50", "exemplar_segm_AP50"):
        assert key in summary
    assert summary["exemplar_others_bbox_AP50"] is None  # one object per (image, category): no "others"
    assert report["baseline"]["summary"] == summary
    results = json.loads((out / "predictions_exemplar.json").read_text())
    assert len(results) == 4 * 6 and (out / "baseline_predictions_exemplar.json").is_file()
    # recomputing the figures from the written results gives the report's numbers
    dataset = build_eval_dataset(DataConfig(root=tmp_path / "data", resolution=64), progress=False)
    from sam3tune.eval.ground_truth import ground_truth_from_plan

    again = exemplar_metrics(
        ground_truth_from_plan(dataset.plan), results, choose_exemplars(dataset.plan), ["bbox"]
    )
    assert np.isclose(again.kept["bbox"].AP50, summary["exemplar_bbox_AP50"])
    md = (out / "eval.md").read_text()
    assert "## Exemplar prompts" in md and "box AP50 others (tiny)" in md
