"""Semantic metrics by hand: presence-gated label maps, per-class IoU summed over images, mIoU."""

import math

import pytest
import torch

from sam3tune.data import Batch
from sam3tune.eval.postprocess import label_map
from sam3tune.eval.semantic_eval import SemanticMetrics, evaluate_semantic, semantic_markdown


def test_label_map_takes_the_best_class_above_threshold():
    scores = torch.tensor([[[0.9, 0.2, 0.6]], [[0.8, 0.4, 0.7]]])  # 2 classes, 1 x 3 pixels
    assert label_map(scores, torch.tensor([3, 5])).tolist() == [[3, -1, 5]]


def _batch(masks: list[list[list[bool]]], valid=None) -> Batch:
    targets = []
    for m in masks:
        t = {"boxes": torch.zeros(0, 4), "semantic_mask": torch.tensor(m)}
        if valid is not None:
            t["semantic_valid"] = torch.tensor(valid)
        targets.append(t)
    n = len(masks)
    return Batch(
        pixel_values=torch.zeros(1, 3, 8, 8),
        image_index=torch.zeros(n, dtype=torch.int64),
        input_ids=torch.zeros(n, 1, dtype=torch.int64),
        attention_mask=torch.ones(n, 1, dtype=torch.int64),
        targets=targets,
        image_ids=torch.tensor([1]),
        orig_sizes=torch.tensor([[1, 4]]),
        category_ids=torch.tensor([1, 2]),
        prompts=["a", "b"],
    )


def test_iou_per_class_and_miou_by_hand():
    # truth: class 1 on pixels 0-1, class 2 on pixel 3; prediction: class 1 on 0, class 2 on 2-3
    batch = _batch(
        [[[True, True, False, False]], [[False, False, False, True]]], valid=[[True, True, True, True]]
    )
    big = 10.0
    sem = torch.tensor([[[[big, -big, -big, -big]]], [[[-big, -big, big, big]]]])
    outputs = {"semantic_seg": sem, "presence_logits": torch.full((2, 1), big)}
    metrics = evaluate_semantic(lambda b: outputs, [batch], {1: "a", 2: "b"})
    assert metrics.intersection == {1: 1, 2: 1} and metrics.union == {1: 2, 2: 2}
    assert metrics.miou == pytest.approx(0.5)
    # a low presence score silences the class everywhere
    outputs["presence_logits"] = torch.tensor([[big], [-big]])
    metrics = evaluate_semantic(lambda b: outputs, [batch], {1: "a", 2: "b"})
    assert metrics.iou(2) == 0.0 and metrics.iou(1) == pytest.approx(0.5)


def test_ignored_pixels_and_classes_without_pixels():
    batch = _batch(
        [[[True, True, False, False]], [[False, False, False, False]]], valid=[[True, False, True, True]]
    )
    sem = torch.full((2, 1, 1, 4), -10.0)
    sem[0, 0, 0, :2] = 10.0
    metrics = evaluate_semantic(
        lambda b: {"semantic_seg": sem, "presence_logits": torch.full((2, 1), 10.0)},
        [batch],
        {1: "a", 2: "b"},
    )
    assert metrics.iou(1) == 1.0 and metrics.iou(2) is None  # the ignored pixel counts nowhere
    assert metrics.miou == 1.0 and metrics.summary() == {"mIoU": 1.0, "IoU/a": 1.0}
    empty = SemanticMetrics({1: "a", 2: "b"}, {1: 0, 2: 0}, {1: 0, 2: 0})
    assert math.isnan(empty.miou)
    text = semantic_markdown(metrics, "tuned", empty, "zero-shot")
    assert (
        "| a | - | 100.0 |" in text and "| b | - | - |" in text and "| **mIoU** | nan | **100.0** |" in text
    )
