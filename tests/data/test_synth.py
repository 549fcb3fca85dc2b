"""The synthetic dataset generator: deterministic, correct masks, loads cleanly, fast."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from PIL import Image

from sam3tune.data import DataConfig, load_plan
from sam3tune.data.masks import decode_segmentation
from sam3tune.data.synth import ANY, COLOURS, SynthConfig, generate, render_image

SMALL = SynthConfig(image_size=(96, 80), splits=(("train", 12), ("valid", 4)), seed=3)


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    generate(SMALL, tmp_path / "a", progress=False)
    generate(SMALL, tmp_path / "b", progress=False)
    generate(SynthConfig(**{**SMALL.__dict__, "seed": 4}), tmp_path / "c", progress=False)
    for name in ("train/_annotations.coco.json", "train/000005.jpg", "valid/000001.jpg"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a/train/000005.jpg").read_bytes() != (tmp_path / "c/train/000005.jpg").read_bytes()


def test_split_size_change_leaves_other_splits_unchanged(tmp_path):
    generate(SMALL, tmp_path / "a", progress=False)
    generate(
        SynthConfig(**{**SMALL.__dict__, "splits": (("train", 12), ("valid", 9))}),
        tmp_path / "b",
        progress=False,
    )
    a = (tmp_path / "a/train/_annotations.coco.json").read_text()
    assert a == (tmp_path / "b/train/_annotations.coco.json").read_text()


def test_loads_cleanly_with_multiword_prompts_and_negatives(tmp_path):
    summary = generate(SMALL, tmp_path, progress=False)
    plan = load_plan(DataConfig(root=tmp_path), "train", progress=False)
    assert sorted(c.prompt for c in plan.categories.values()) == [
        "blue triangle",
        "green square",
        "red circle",
        "yellow star",
    ]
    assert dict(plan.problems.counts) == {"category_placeholder": 1}
    assert plan.num_targets == summary.objects["train"]
    assert plan.num_negative > 0 and plan.num_positive > 0  # some images lack some categories


def test_masks_cover_the_drawn_colour():
    config = SynthConfig(image_size=(128, 128), texture_strength=0.3, colour_jitter=0)
    pairs = config.category_pairs()
    checked = 0
    for seed in range(6):
        image, objects = render_image(config, np.random.default_rng(seed))
        pixels = np.asarray(image).astype(float)
        for obj in objects:
            crop = decode_segmentation([obj.polygon], 128, 128)
            mask = np.zeros((128, 128), dtype=bool)
            mask[crop.top : crop.top + crop.mask.shape[0], crop.left : crop.left + crop.mask.shape[1]] = (
                crop.mask
            )
            inner = mask & ~np.roll(mask, 1, 0) | mask & ~np.roll(mask, -1, 1)  # boundary pixels
            core = mask & ~inner
            mean = pixels[core].mean(axis=0)
            assert np.abs(mean - COLOURS[obj.colour]).max() < 2, (seed, obj.colour, mean)
            assert [pairs[c] for c in obj.categories] == [(obj.colour, obj.shape)]
            x, y, w, h = obj.bbox
            assert min(x, y) >= 0 and x + w <= 128 and y + h <= 128
            checked += 1
    assert checked > 10


def test_custom_categories_and_empty_images(tmp_path):
    config = SynthConfig(
        categories=(("purple", "hexagon"), ("cyan", "cross")),
        empty_fraction=1.0,
        splits=(("train", 3),),
        placeholder_category=False,
    )
    summary = generate(config, tmp_path, progress=False)
    coco = json.loads((tmp_path / "train/_annotations.coco.json").read_text())
    assert [c["name"] for c in coco["categories"]] == ["purple hexagon", "cyan cross"]
    assert summary.objects == {"train": 0} and coco["annotations"] == []
    assert Image.open(tmp_path / "train/000000.jpg").size == (256, 256)


def test_bad_categories_are_rejected():
    with pytest.raises(ValueError, match="unknown category"):
        SynthConfig(categories=(("mauve", "circle"),)).category_pairs()
    with pytest.raises(ValueError, match="unknown preset"):
        SynthConfig(categories="nope").category_pairs()


def test_hundreds_of_images_in_seconds(tmp_path):
    start = time.perf_counter()
    generate(SynthConfig(image_size=(128, 128), splits=(("train", 200),)), tmp_path, progress=False)
    assert time.perf_counter() - start < 20  # ~2 s on an idle core; generous for a shared machine


CONCEPTS = SynthConfig(
    image_size=(64, 64),
    categories=((ANY, "circle"), ("red", "circle"), ("red", ANY), ("blue", "star")),
    objects=(("red", "circle"), ("blue", "circle"), ("red", "heart"), ("blue", "star")),
    distractors=(("green", "moon"),),
    distractor_fraction=0.3,
    negative_categories=("blorf", "red zamt"),
    objects_per_image=(2, 3),
    object_size=(0.3, 0.4),
    rotate=False,
    empty_fraction=0.0,
    splits=(("train", 40),),
    placeholder_category=False,
)


def test_categories_are_predicates_and_an_object_is_annotated_once_per_match(tmp_path):
    summary = generate(CONCEPTS, tmp_path, progress=False)
    coco = json.loads((tmp_path / "train/_annotations.coco.json").read_text())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    assert list(names.values()) == ["circle", "red circle", "red", "blue star", "blorf", "red zamt"]
    expected = {
        ("red", "circle"): {"circle", "red circle", "red"},
        ("blue", "circle"): {"circle"},
        ("red", "heart"): {"red"},
        ("blue", "star"): {"blue star"},
        ("green", "moon"): set(),  # a distractor no category names
    }
    kinds_seen = set()
    for index in range(40):
        _, objects = render_image(CONCEPTS, np.random.default_rng(np.random.SeedSequence([0, 0, index])))
        for obj in objects:
            kinds_seen.add((obj.colour, obj.shape))
            written = {
                names[a["category_id"]]
                for a in coco["annotations"]
                if a["image_id"] == index and a["segmentation"] == [obj.polygon]
            }
            assert written == expected[(obj.colour, obj.shape)]
    assert kinds_seen == set(expected)  # every kind, distractors included, was drawn
    assert summary.instances["train"]["blorf"] == summary.instances["train"]["red zamt"] == 0
    assert sum(summary.instances["train"].values()) == len(coco["annotations"])
    assert summary.instances["train"]["circle"] > summary.instances["train"]["red circle"] > 0

    # the loader takes overlapping categories: each query gets its own copy of the object
    plan = load_plan(DataConfig(root=tmp_path, keep_unused_categories=True), "train", progress=False)
    assert plan.num_targets == len(coco["annotations"])
    assert {c.prompt for c in plan.categories.values()} == set(names.values())
    for query in plan.images:
        circles = {o.box for o in query.positives.get(1, ())}
        red_circles = {o.box for o in query.positives.get(2, ())}
        assert red_circles <= circles
        assert 5 in query.negative_candidates and 6 in query.negative_candidates  # made-up words


def test_upright_shapes_fill_their_box():
    config = SynthConfig(**{**CONCEPTS.__dict__, "distractor_fraction": 0.0, "aspect_ratio": (0.8, 1.25)})
    for seed in range(10):
        _, objects = render_image(config, np.random.default_rng(seed))
        for obj in objects:
            x, y, w, h = obj.bbox
            assert 0.3 * 64 - 1e-6 <= w <= 0.4 * 64 + 1e-6  # width = object_size x side
            assert 0.8 * w - 1e-6 <= h <= 1.25 * w + 1e-6
            assert x >= 0 and y >= 0 and x + w <= 64 and y + h <= 64


def test_bad_concept_settings_are_rejected():
    with pytest.raises(ValueError, match="set `objects`"):
        SynthConfig(categories=((ANY, "circle"),)).object_kinds()
    with pytest.raises(ValueError, match="not both"):
        SynthConfig(categories=((ANY, ANY),)).category_pairs()
    with pytest.raises(ValueError, match="square and diamond"):
        SynthConfig(categories=(("red", "square"), ("red", "diamond"))).object_kinds()
    SynthConfig(categories=(("red", "square"), ("red", "diamond")), rotate=False).object_kinds()
    with pytest.raises(ValueError, match="needs distractors"):
        SynthConfig(distractor_fraction=0.5).object_kinds()
    with pytest.raises(ValueError, match="distinct"):
        SynthConfig(categories=(("red", "circle"),), negative_categories=("red circle",)).category_names()
