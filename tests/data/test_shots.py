"""K-shot sampling (``data.shots``): the two protocols' rules pinned on hand-made splits."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from sam3tune.config import InvalidValue
from sam3tune.data import DataConfig, build_eval_dataset, build_train_dataset, plan_queries
from sam3tune.data.coco import CocoImage, CocoObject, CocoSplit
from sam3tune.data.inspection import inspect_dataset
from sam3tune.data.shots import sample_shots
from tests.data.conftest import write_split

A, B, C = 1, 2, 3


def make_split(images: dict[int, list[int]], crowd: dict[int, list[int]] | None = None) -> CocoSplit:
    """A split whose image ``i`` shows one object per entry of ``images[i]`` (category ids), plus crowd
    objects ``crowd[i]``; categories A, B, C."""
    crowd = crowd or {}
    objects: dict[int, list[CocoObject]] = {}
    next_id = 1
    for image_id in images:
        objects[image_id] = []
        for cat, is_crowd in [(c, False) for c in images[image_id]] + [
            (c, True) for c in crowd.get(image_id, [])
        ]:
            box = (float(next_id % 7), 1.0, float(next_id % 7) + 5.0, 6.0)
            objects[image_id].append(CocoObject(next_id, cat, box, None, is_crowd))
            next_id += 1
    return CocoSplit(
        name="train",
        annotation_file=Path("train/_annotations.coco.json"),
        image_dir=Path("train"),
        images=[CocoImage(i, f"{i}.png", Path(f"train/{i}.png"), 16, 16, "RGB") for i in images],
        objects=objects,
        categories={A: "apple", B: "bee", C: "cat"},
        supercategories={A: "", B: "", C: ""},
    )


def labelled(split: CocoSplit) -> dict[int, Counter]:
    """Image id -> Counter of its non-crowd objects' categories."""
    return {i: Counter(o.category_id for o in objs if not o.iscrowd) for i, objs in split.objects.items()}


# ---- the image rule (GLIP / ODinW) ----


def test_image_rule_single_category_images_take_exactly_k_images_per_category():
    # 6 images of A (some with several objects), 6 of B: K = 2 images each, every object on them kept
    images = {i: [A] * (1 + i % 3) for i in range(1, 7)} | {i: [B] for i in range(7, 13)}
    for seed in range(20):
        sampled, sample = sample_shots(make_split(images), 2, seed, "image")
        counts = labelled(sampled)
        assert len(sampled.images) == 4
        assert sample.shots == {A: 2, B: 2} and sample.available == {A: 6, B: 6}
        for image_id, objs in counts.items():  # all annotations of a taken image are kept
            assert objs == Counter(images[image_id])
        assert sample.instances[A] == sum(len(images[i]) for i in counts if images[i][0] == A)
        assert not sampled.unlabelled and not sample.short


def test_image_rule_an_image_counts_one_shot_for_every_category_it_shows():
    # every image shows A and B (B twice): K = 2 needs exactly 2 images, each counting for both
    images = {i: [A, B, B] for i in range(1, 9)}
    sampled, sample = sample_shots(make_split(images), 2, 5, "image")
    assert len(sampled.images) == 2
    assert sample.shots == {A: 2, B: 2}  # images, not objects
    assert sample.instances == {A: 2, B: 4}


def test_image_rule_categories_on_images_taken_for_others_can_exceed_k():
    # B is only on images that also show A; A has images of its own. K = 1: whenever A's own image comes
    # first, the image taken for B adds a second A shot.
    images = {1: [A, B], 2: [A, B], 3: [A], 4: [A], 5: [A], 6: [C]}
    results = [sample_shots(make_split(images), 1, seed, "image")[1] for seed in range(40)]
    for sample in results:
        assert sample.shots[B] == 1 and sample.shots[C] == 1 and sample.shots[A] >= 1
    assert {s.shots[A] for s in results} == {1, 2}  # both orders happen
    for sample in results:  # never more images than needed: one for C, one or two for A and B
        assert len(sample.image_ids) == 1 + sample.shots[A]


def test_image_rule_keeps_crowd_and_never_takes_images_without_objects():
    images = {1: [A], 2: [], 3: [], 4: [B]}
    sampled, sample = sample_shots(make_split(images, crowd={1: [C], 3: [A]}), 5, 0, "image")
    assert sample.image_ids == (1, 4)  # images 2 and 3 show no target: never a shot
    assert [o.category_id for o in sampled.objects[1] if o.iscrowd] == [C]
    assert sample.short == [A, B] and sample.available == {A: 1, B: 1}  # fewer than K exist


def test_same_seed_same_sample_other_seeds_differ():
    images = {i: [A if i % 2 else B] for i in range(1, 61)}
    first = sample_shots(make_split(images), 3, 7, "image")[1].image_ids
    assert first == sample_shots(make_split(images), 3, 7, "image")[1].image_ids
    others = {sample_shots(make_split(images), 3, s, "image")[1].image_ids for s in range(10)}
    assert len(others) >= 9  # 30 choose 3 per category: seeds give different images


# ---- the instance rule (TFA / Foundational FSOD, RF100-VL-FSOD) ----


def test_instance_rule_collects_exactly_k_objects_when_possible():
    # A appears as 1, 2 or 3 objects per image; K = 4 can always be reached exactly
    images = {i: [A] * (1 + i % 3) for i in range(1, 13)}
    for seed in range(20):
        sampled, sample = sample_shots(make_split(images), 4, seed, "instance")
        assert sample.shots == {A: 4} and sample.instances == {A: 4}
        assert sum(sum(c.values()) for c in labelled(sampled).values()) == 4


def test_instance_rule_falls_short_when_no_image_fits_exactly():
    images = {i: [A, A] for i in range(1, 6)}  # objects come in pairs; K = 3
    sampled, sample = sample_shots(make_split(images), 3, 0, "instance")
    assert sample.shots == {A: 2} and sample.short == [A] and len(sampled.images) == 1


def test_instance_rule_removes_other_categories_and_leaves_them_unlabelled_not_negative():
    # image 1 shows A and B; only A's draw can take it when B has enough images of its own first
    images = {1: [A, B], 2: [B], 3: [B], 4: [B], 5: [C]}
    for seed in range(40):
        sampled, sample = sample_shots(make_split(images), 1, seed, "instance")
        if 1 in sample.image_ids and sampled.unlabelled.get(1):
            break
    else:
        pytest.fail("no seed took image 1 for A alone")
    assert sampled.unlabelled[1] == frozenset({B})
    assert labelled(sampled)[1] == Counter({A: 1})  # B's object removed from the image
    plan = plan_queries(sampled)
    query = next(q for q in plan.images if q.image.image_id == 1)
    assert set(query.positives) == {A}
    assert query.negative_candidates == (C,)  # B is there but unlabelled: not a negative; C is absent
    assert sample.unlabelled == 1


def test_instance_rule_draws_each_category_independently():
    base = {i: [A] for i in range(1, 21)}
    with_b = base | {i: [B] for i in range(21, 41)}
    for seed in range(5):
        a_only = sample_shots(make_split(base), 3, seed, "instance")[1].image_ids
        mixed = sample_shots(make_split(with_b), 3, seed, "instance")[1].image_ids
        assert [i for i in mixed if i <= 20] == list(a_only)


def test_rules_differ_on_what_counts_as_a_shot():
    images = {i: [A, A, A] for i in range(1, 11)}
    by_image = sample_shots(make_split(images), 2, 0, "image")[1]
    by_instance = sample_shots(make_split(images), 2, 0, "instance")[1]
    assert (len(by_image.image_ids), by_image.instances[A]) == (2, 6)
    assert by_instance.shots == {A: 0} and by_instance.short == [A]  # no image has 2 or fewer


# ---- wiring: config, training dataset, inspect ----


def _dataset(root: Path) -> None:
    def split(n: int, offset: int) -> dict:
        images = [{"id": i, "file_name": f"{i}.png", "width": 32, "height": 24} for i in range(1, n + 1)]
        annotations = [
            {"id": offset + i, "image_id": i, "category_id": 1 + i % 2, "bbox": [2, 2, 10, 8], "iscrowd": 0}
            for i in range(1, n + 1)
        ]
        return {"images": images, "annotations": annotations,
                "categories": [{"id": 1, "name": "ant"}, {"id": 2, "name": "bird"}]}  # fmt: skip

    write_split(root / "train", split(12, 0))
    write_split(root / "valid", split(6, 100))


def test_training_dataset_is_the_sample_and_evaluation_the_whole_split(tmp_path):
    _dataset(tmp_path)
    config = DataConfig(root=tmp_path, shots=2, shots_seed=3, resolution=32)
    train = build_train_dataset(config, progress=False)
    assert len(train) == 4 and train.plan.shots is not None and train.plan.shots.shots == {1: 2, 2: 2}
    assert len(build_eval_dataset(config, progress=False)) == 6
    again = build_train_dataset(config, progress=False)
    assert [q.image.image_id for q in again.plan.images] == [q.image.image_id for q in train.plan.images]


def test_inspect_reports_the_sample_of_the_training_split(tmp_path):
    _dataset(tmp_path)
    report = inspect_dataset(tmp_path, DataConfig(shots=2, shots_seed=3), progress=False)
    entries = {s["name"]: s for s in report["splits"]}
    shots = entries["train"]["shots"]
    assert shots["k"] == 2 and shots["seed"] == 3 and shots["rule"] == "image"
    assert (shots["images"], shots["images_available"]) == (4, 12)
    assert [c["shots"] for c in shots["categories"]] == [2, 2]
    assert entries["train"]["images"]["usable"] == 4 and entries["valid"]["shots"] is None
    assert report["settings"]["shots"] == 2
    assert json.loads(json.dumps(report)) == report


@pytest.mark.parametrize(("key", "value"), [("shots", 0), ("shots", -3), ("shots_seed", -1)])
def test_bad_shot_settings_are_refused_with_the_key(key, value):
    with pytest.raises(InvalidValue, match=key):
        DataConfig(**{key: value})
