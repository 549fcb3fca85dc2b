"""Queries: positives, negatives, prompts, crowd, skipped categories, cap; fruits_nuts counts."""

from __future__ import annotations

import json

import pytest

from sam3tune.data import (
    DataConfig,
    DataError,
    build_eval_dataset,
    build_train_dataset,
    clean_prompt,
    find_splits,
    load_plan,
    load_split,
    plan_queries,
)
from tests.data.conftest import FRUITS_NUTS, basic_coco, write_split


def _plan(tmp_path, coco, **kwargs):
    write_split(tmp_path / "train", coco)
    return plan_queries(load_split(find_splits(tmp_path / "train")[0], progress=False), **kwargs)


@pytest.mark.skipif(not FRUITS_NUTS.is_dir(), reason="shared fruits_nuts dataset not present")
def test_fruits_nuts_query_counts():
    plan = load_plan(DataConfig(root=FRUITS_NUTS), "train", progress=False)
    assert len(plan.split.images) == 18 and plan.split.annotations_listed == 165
    assert {c.category_id: c.prompt for c in plan.categories.values()} == {1: "date", 2: "fig", 3: "hazelnut"}
    instances = {c: sum(len(q.positives.get(c, ())) for q in plan.images) for c in (1, 2, 3)}
    assert instances == {1: 71, 2: 41, 3: 53}
    # 15 images show all 3 categories, 2 show 2 and 1 shows 1: 15*3 + 2*2 + 1 = 50 positives,
    # 54 (image, category) pairs in all, so 4 negatives.
    assert (plan.num_positive, plan.num_negative, plan.num_targets) == (50, 4, 165)
    assert not plan.problems.counts
    none = load_plan(DataConfig(root=FRUITS_NUTS, negatives="none"), "train", progress=False)
    assert (none.num_positive, none.num_negative, len(none.images)) == (50, 0, 18)
    one = load_plan(DataConfig(root=FRUITS_NUTS, negatives=1), "train", progress=False)
    assert one.num_negative == 3  # 3 images miss a category, each gets min(1, missing)
    assert plan.has_masks


@pytest.mark.skipif(not FRUITS_NUTS.is_dir(), reason="shared fruits_nuts dataset not present")
def test_fruits_nuts_sample_shapes(tokenize):
    from sam3tune.data import collate

    config = DataConfig(root=FRUITS_NUTS, resolution=64, mask_resolution=32)
    dataset = build_train_dataset(config, progress=False)
    batch = collate([dataset[i] for i in range(3)], tokenize)
    assert batch.pixel_values.shape == (3, 3, 64, 64)
    assert sum(len(t["boxes"]) for t in batch.targets) == sum(
        len(objs) for q in dataset.plan.images[:3] for objs in q.positives.values()
    )
    for target in batch.targets:
        boxes = target["boxes"]
        assert boxes.dtype.is_floating_point and ((boxes >= 0) & (boxes <= 1)).all()
        assert target["masks"].shape == (len(boxes), 32, 32) and target["is_valid_mask"].all()


def test_clean_prompt():
    assert clean_prompt("Red_Circle") == "red circle"
    assert clean_prompt("  traffic-light__big ") == "traffic light big"


def test_positive_and_negative_queries(tmp_path):
    plan = _plan(tmp_path, basic_coco())
    by_image = {q.image.image_id: q for q in plan.images}
    assert list(by_image[1].positives) == [1, 2] and by_image[1].negative_candidates == ()
    assert list(by_image[2].positives) == [1] and by_image[2].negative_candidates == (2,)
    assert by_image[3].positives == {} and by_image[3].negative_candidates == (1, 2)  # background image
    assert (plan.num_positive, plan.num_negative) == (3, 3)
    assert {c.prompt for c in plan.categories.values()} == {"red box", "blue dot"}


def test_each_object_keeps_its_own_category(tmp_path):
    plan = _plan(tmp_path, basic_coco())
    image1 = next(q for q in plan.images if q.image.image_id == 1)
    assert [o.annotation_id for o in image1.positives[1]] == [10]
    assert [o.annotation_id for o in image1.positives[2]] == [11]


def test_negatives_none_drops_background_images_and_counts_them(tmp_path):
    plan = _plan(tmp_path, basic_coco(), negatives="none")
    assert [q.image.image_id for q in plan.images] == [1, 2]
    assert plan.problems["image_without_queries"] == 1
    assert "image 3 'c.png'" in plan.problems.examples["image_without_queries"][0]


def test_crowd_is_never_a_target_nor_a_negative(tmp_path):
    coco = basic_coco()
    # image 2: a crowd "blue dot" -> category 2 is neither positive nor negative there
    coco["annotations"].append(
        {"id": 20, "image_id": 2, "category_id": 2, "bbox": [1, 1, 5, 5], "iscrowd": 1}
    )
    # image 1: a crowd "red box" next to a normal one -> still only the normal one is a target
    coco["annotations"].append(
        {"id": 21, "image_id": 1, "category_id": 1, "bbox": [20, 1, 5, 5], "iscrowd": 1}
    )
    plan = _plan(tmp_path, coco)
    by_image = {q.image.image_id: q for q in plan.images}
    assert list(by_image[2].positives) == [1] and by_image[2].negative_candidates == ()
    assert [o.annotation_id for o in by_image[1].positives[1]] == [10]


def test_unused_and_placeholder_categories_are_skipped_and_reported(tmp_path):
    coco = basic_coco()
    coco["categories"] = [
        {"id": 0, "name": "shapes-abc", "supercategory": "none"},
        {"id": 1, "name": "red_box", "supercategory": "shapes-abc"},
        {"id": 2, "name": "Blue-Dot", "supercategory": "shapes-abc"},
        {"id": 3, "name": "green", "supercategory": "shapes-abc"},
    ]
    plan = _plan(tmp_path, coco)
    assert sorted(plan.categories) == [1, 2]
    assert plan.problems["category_placeholder"] == 1 and plan.problems["category_unused"] == 1
    assert plan.problems.examples["category_placeholder"] == ["category 0 'shapes-abc'"]
    assert plan.problems.examples["category_unused"] == ["category 3 'green'"]
    kept = _plan(tmp_path / "again", coco, keep_unused_categories=True)
    assert sorted(kept.categories) == [0, 1, 2, 3]
    assert kept.num_negative == 2 + 3 + 4  # images 1, 2, 3 miss 2, 3 and 4 of the 4 categories


def test_placeholder_repeating_a_real_class_name(tmp_path):
    coco = basic_coco()
    coco["categories"].insert(0, {"id": 0, "name": "red_box"})
    plan = _plan(tmp_path, coco)
    assert plan.problems.examples["category_placeholder"] == ["category 0 'red_box'"]


def test_prompt_map_by_name_and_id(tmp_path):
    write_split(tmp_path / "train", basic_coco())
    prompts = tmp_path / "prompts.yaml"
    prompts.write_text("red_box: crimson square\n2: small blue circle\n")
    plan = load_plan(DataConfig(root=tmp_path, prompts=prompts), "train", progress=False)
    assert plan.categories[1].prompt == "crimson square"
    assert plan.categories[2].prompt == "small blue circle"
    as_json = tmp_path / "prompts.json"
    as_json.write_text(json.dumps({"1": "box"}))
    assert (
        load_plan(DataConfig(root=tmp_path, prompts=as_json), "train", progress=False).categories[1].prompt
        == "box"
    )


def test_prompt_map_with_unknown_key_is_an_error(tmp_path):
    write_split(tmp_path / "train", basic_coco())
    prompts = tmp_path / "prompts.yaml"
    prompts.write_text("red_bx: crimson square\n")
    with pytest.raises(DataError, match="'red_bx' match no category"):
        load_plan(DataConfig(root=tmp_path, prompts=prompts), "train", progress=False)


def test_objects_over_cap_keep_the_largest(tmp_path):
    coco = basic_coco()
    coco["annotations"] = [
        {"id": 30 + i, "image_id": 1, "category_id": 1, "bbox": [0, 0, 1 + i, 1 + i], "iscrowd": 0}
        for i in range(5)
    ] + [{"id": 40, "image_id": 2, "category_id": 2, "bbox": [0, 0, 3, 3], "iscrowd": 0}]
    plan = _plan(tmp_path, coco, max_objects_per_query=3)
    image1 = next(q for q in plan.images if q.image.image_id == 1)
    assert [o.annotation_id for o in image1.positives[1]] == [32, 33, 34]
    assert plan.problems["objects_over_cap"] == 2
    assert "image 1 'a.png' category 1: kept 3 of 5" in plan.problems.examples["objects_over_cap"][0]


def test_eval_dataset_queries_every_category(tmp_path):
    write_split(tmp_path / "valid", basic_coco())
    write_split(tmp_path / "train", basic_coco())
    config = DataConfig(root=tmp_path, negatives="none", resolution=32, masks=False)
    assert build_train_dataset(config, progress=False).plan.num_negative == 0
    evaluation = build_eval_dataset(config, progress=False)
    assert evaluation.plan.num_negative == 3 and evaluation.plan.split.name == "valid"
    assert [s.category_ids for s in (evaluation[0], evaluation[1], evaluation[2])] == [[1, 2], [1, 2], [1, 2]]


def test_val_alias_and_missing_split(tmp_path):
    write_split(tmp_path / "val", basic_coco())
    write_split(tmp_path / "train", basic_coco())
    assert load_plan(DataConfig(root=tmp_path), "valid", train=False, progress=False).split.name == "val"
    with pytest.raises(DataError, match="no split 'test' \\(splits found: train, val\\)"):
        load_plan(DataConfig(root=tmp_path), "test", progress=False)
