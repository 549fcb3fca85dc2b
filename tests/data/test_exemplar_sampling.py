"""Exemplar queries: the draw, the transforms they share with the targets, drops, collate, inspect."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sam3tune.data import DataConfig, QueryDataset, build_eval_dataset, build_train_dataset, collate
from sam3tune.data.coco import CocoObject
from sam3tune.data.config import ExemplarConfig
from sam3tune.data.dataset import count_exemplar_queries
from sam3tune.data.exemplars import draw_exemplars
from sam3tune.data.inspection import inspect_dataset
from tests.data.conftest import basic_coco, word_tokenize, write_split
from tests.data.test_dataset import GEOMETRIES, _two_image_dataset


def _objects(category_id: int, n: int) -> tuple[CocoObject, ...]:
    return tuple(
        CocoObject(
            annotation_id=100 * category_id + i,
            category_id=category_id,
            box=(i, i, i + 2.0, i + 2.0),
            segmentation=None,
            iscrowd=False,
        )
        for i in range(n)
    )


def test_draw_follows_the_probability_and_bounds():
    positives = {1: _objects(1, 5), 2: _objects(2, 1), 3: _objects(3, 2)}
    config = ExemplarConfig(probability=0.3, max_positives=3, max_negatives=2)
    rng = np.random.default_rng(0)
    chosen, sizes, negatives = 0, set(), set()
    for _ in range(2000):
        draws = draw_exemplars(positives, config, rng)
        chosen += len(draws)
        for cat_id, draw in draws.items():
            assert 1 <= len(draw.positives) <= min(3, len(positives[cat_id]))
            assert len(set(draw.positives)) == len(draw.positives)
            assert all(0 <= i < len(positives[cat_id]) for i in draw.positives)
            assert all(o.category_id != cat_id for o in draw.negatives) and len(draw.negatives) <= 2
            sizes.add((cat_id, len(draw.positives)))
            negatives.add(len(draw.negatives))
    assert abs(chosen / 6000 - 0.3) < 0.03
    assert sizes == {(1, 1), (1, 2), (1, 3), (2, 1), (3, 1), (3, 2)}
    assert negatives == {0, 1, 2}
    assert draw_exemplars(positives, ExemplarConfig(), rng) == {}
    again = [draw_exemplars(positives, config, np.random.default_rng(7)) for _ in range(2)]
    assert again[0] == again[1]


def test_exemplar_boxes_follow_the_targets_through_the_geometry(tmp_path, monkeypatch):
    root = _two_image_dataset(tmp_path)
    exemplars = ExemplarConfig(probability=1.0, max_negatives=1)
    config = DataConfig(root=root, resolution=64, hflip=True, exemplars=exemplars)
    dataset = build_train_dataset(config, progress=False)
    monkeypatch.setattr(QueryDataset, "geometry", lambda self, index: GEOMETRIES[index])
    seen_negative = False
    for epoch in range(12):
        dataset.set_epoch(epoch)
        batch = collate([dataset[0], dataset[1]], word_tokenize)
        # every positive query became "visual"; "blue dot" on image A is a negative (text) query
        assert batch.prompts == ["visual", "blue dot", "visual", "visual"]
        assert batch.category_ids.tolist() == [1, 2, 1, 2]
        # the exemplar box is its object's target box (flipped, resized, pasted), and stays a target
        torch.testing.assert_close(batch.exemplar_boxes[0, 0], torch.tensor([0.5, 0.45, 0.125, 0.2]))
        torch.testing.assert_close(batch.exemplar_boxes[0, 0], batch.targets[0]["boxes"][0])
        torch.testing.assert_close(batch.exemplar_boxes[2, 0], batch.targets[2]["boxes"][0])
        torch.testing.assert_close(batch.exemplar_boxes[3, 0], batch.targets[3]["boxes"][0])
        assert batch.exemplar_labels[:, 0].tolist() == [1, -1, 1, 1]
        assert batch.exemplar_labels[1].tolist() == [-1] * batch.exemplar_labels.shape[1]
        # image B: the other category's object may be a negative exemplar (label 0), after the positive
        for row, other in ((2, 3), (3, 2)):
            if batch.exemplar_labels.shape[1] == 2 and batch.exemplar_labels[row, 1] == 0:
                torch.testing.assert_close(batch.exemplar_boxes[row, 1], batch.targets[other]["boxes"][0])
                seen_negative = True
    assert seen_negative


def test_keep_text_keeps_the_category_prompt(tmp_path):
    root = _two_image_dataset(tmp_path)
    config = DataConfig(root=root, resolution=64, exemplars=ExemplarConfig(probability=1.0, keep_text=True))
    sample = build_train_dataset(config, progress=False)[1]
    assert sample.prompts == ["red box", "blue dot"]
    assert [len(b) for b in sample.exemplar_boxes] == [1, 1]


def _tiny_object_split(root, negative_tiny: bool = False):
    """Image 1: two "red box" objects, one 0.0001 px wide (empty after any resize), and a "blue dot"."""
    coco = basic_coco()
    coco["annotations"].append(
        {"id": 13, "image_id": 1, "category_id": 1, "bbox": [20, 14, 0.0001, 4], "iscrowd": 0}
    )
    if negative_tiny:  # the blue dot becomes the empty one instead
        coco["annotations"][-1]["bbox"] = [20, 14, 4, 4]
        coco["annotations"][1].update(bbox=[16, 4, 0.0001, 8], segmentation=[])
    write_split(root / "train", coco)
    return root


def test_a_positive_exemplar_removed_by_the_transform_drops_its_query(tmp_path):
    root = _tiny_object_split(tmp_path)
    config = DataConfig(root=root, resolution=32, negatives="none", exemplars=ExemplarConfig(probability=1.0))
    dataset = build_train_dataset(config, progress=False)
    outcomes = set()
    for epoch in range(16):
        dataset.set_epoch(epoch)
        draw = dataset.exemplar_draws(0)[1]
        sample = dataset[0]
        if draw.positives == (1,):  # the tiny object (annotation 13) was drawn: query dropped, counted
            assert sample.category_ids == [2] and sample.dropped["empty_exemplar_queries"] == 1
        else:  # the other one: the query keeps its one surviving target, which is the exemplar
            assert sample.category_ids == [1, 2] and sample.dropped["empty_exemplar_queries"] == 0
            assert len(sample.targets[0]["boxes"]) == 1
            torch.testing.assert_close(sample.exemplar_boxes[0], sample.targets[0]["boxes"])
        assert sample.dropped["empty_objects"] == 1
        outcomes.add(draw.positives)
    assert outcomes == {(0,), (1,)}


def test_a_negative_exemplar_removed_by_the_transform_is_left_out(tmp_path):
    root = _tiny_object_split(tmp_path, negative_tiny=True)
    exemplars = ExemplarConfig(probability=1.0, max_negatives=1)
    config = DataConfig(root=root, resolution=32, negatives="none", exemplars=exemplars)
    dataset = build_train_dataset(config, progress=False)
    # image 1: the blue dot (category 2) is empty after the resize, so its query is dropped as before
    for epoch in range(16):
        dataset.set_epoch(epoch)
        draw = dataset.exemplar_draws(0)[1]
        sample = dataset[0]
        assert sample.category_ids == [1]
        removed = int(any(o.category_id == 2 for o in draw.negatives))
        assert sample.dropped["empty_negative_exemplars"] == removed
        assert sample.exemplar_labels[0].tolist() == [1] * len(draw.positives)


def test_evaluation_datasets_have_no_exemplars(tmp_path):
    root = _two_image_dataset(tmp_path)
    config = DataConfig(root=root, val="train", resolution=64, exemplars=ExemplarConfig(probability=1.0))
    dataset = build_eval_dataset(config, progress=False)
    batch = collate([dataset[0], dataset[1]], word_tokenize)
    assert batch.exemplar_boxes is None and batch.exemplar_labels is None
    assert "visual" not in batch.prompts


def test_collate_pads_mixed_queries(tmp_path):
    root = _two_image_dataset(tmp_path)
    exemplars = ExemplarConfig(probability=0.5, max_positives=2, max_negatives=1)
    dataset = build_train_dataset(DataConfig(root=root, resolution=64, exemplars=exemplars), progress=False)
    for epoch in range(20):
        dataset.set_epoch(epoch)
        samples = [dataset[0], dataset[1]]
        batch = collate(samples, word_tokenize)
        counts = [len(b) for s in samples for b in (s.exemplar_boxes or [()] * len(s.prompts))]
        if not any(counts):
            assert batch.exemplar_boxes is None
            continue
        assert batch.exemplar_boxes.shape == (4, max(counts), 4)
        assert ((batch.exemplar_labels >= 0).sum(dim=1)).tolist() == counts
        padding = batch.exemplar_labels < 0
        assert (batch.exemplar_boxes[padding] == 0).all()
        for row, n in enumerate(counts):  # boxes first, then padding
            assert (batch.exemplar_labels[row, :n] >= 0).all() and (
                batch.exemplar_labels[row, n:] == -1
            ).all()
            assert (batch.prompts[row] == "visual") == (n > 0)


def test_exemplars_leave_geometry_and_negatives_unchanged(tmp_path):
    coco = basic_coco()
    write_split(tmp_path / "train", coco)
    plain = build_train_dataset(DataConfig(root=tmp_path, resolution=32, negatives=1), progress=False)
    with_exemplars = build_train_dataset(
        DataConfig(root=tmp_path, resolution=32, negatives=1, exemplars=ExemplarConfig(probability=0.5)),
        progress=False,
    )
    for epoch in range(3):
        plain.set_epoch(epoch)
        with_exemplars.set_epoch(epoch)
        for index in range(len(plain)):
            assert plain.geometry(index) == with_exemplars.geometry(index)
            a, b = plain[index], with_exemplars[index]
            assert a.category_ids == b.category_ids and torch.equal(a.image, b.image)


@pytest.mark.parametrize("probability", [0.0, 0.5, 1.0])
def test_inspect_counts_the_exemplar_queries_of_epoch_zero(tmp_path, probability):
    write_split(tmp_path / "train", basic_coco())
    config = DataConfig(root=tmp_path, resolution=32, exemplars=ExemplarConfig(probability=probability))
    report = inspect_dataset(tmp_path, config, progress=False)
    counted = report["splits"][0]["queries"]["exemplar"]
    assert report["settings"]["exemplars"]["probability"] == probability
    dataset = build_train_dataset(config, progress=False)
    visual = sum(p == "visual" for i in range(len(dataset)) for p in dataset[i].prompts)
    assert counted == visual == count_exemplar_queries(dataset.plan, config)
    assert counted == {0.0: 0, 1.0: 3}.get(probability, counted)  # 3 positive queries in basic_coco


def test_exemplar_config_validation():
    with pytest.raises(ValueError, match="probability"):
        ExemplarConfig(probability=1.5)
    with pytest.raises(ValueError, match="max_positives"):
        ExemplarConfig(max_positives=0)
    with pytest.raises(ValueError, match="max_negatives"):
        ExemplarConfig(max_negatives=-1)
