"""The queries the forgetting remedies add to a training split, from hand-made starting-model answers:
replay positives / negatives / unasked pairs, distillation flags, repeated confusable negatives."""

import numpy as np
import pytest
import torch

from sam3tune.data import DataConfig, QueryDataset, build_train_dataset, collate
from sam3tune.data.retention_queries import (
    hard_negatives,
    parse_pairs,
    retention_categories,
    retention_queries,
)
from sam3tune.eval.rle import encode_masks
from tests.data.conftest import word_tokenize, write_split


@pytest.fixture
def dataset(tmp_path):
    coco = {
        "images": [
            {"id": 1, "file_name": "a.png", "width": 32, "height": 32},
            {"id": 2, "file_name": "b.png", "width": 32, "height": 32},
        ],
        "categories": [{"id": 1, "name": "red_box"}, {"id": 2, "name": "blue_dot"}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "bbox": [4, 4, 8, 8],
                "iscrowd": 0,
                "segmentation": [[4, 4, 12, 4, 12, 12, 4, 12]],
            },
            {"id": 2, "image_id": 2, "category_id": 2, "bbox": [16, 16, 8, 8], "iscrowd": 0},
        ],
    }
    write_split(tmp_path / "train", coco)
    config = DataConfig(root=tmp_path, resolution=32, negatives="all")
    return build_train_dataset(config, progress=False, augment=False)


def answer(image_id, category_id, score, box=(0.0, 0.0, 8.0, 8.0)):
    mask = np.zeros((1, 32, 32), bool)
    x, y, w, h = (int(v) for v in box)
    mask[0, y : y + h, x : x + w] = True
    return {"image_id": image_id, "category_id": category_id, "bbox": list(box), "score": score,
            "segmentation": encode_masks(mask)[0]}  # fmt: skip


def starting_answers(categories):
    circle, square = (c.category_id for c in categories.values())
    return [
        answer(1, circle, 0.9, (16, 0, 8, 16)),  # confident: a pseudo-label
        answer(1, circle, 0.3),  # a second, unsure detection: not a target
        answer(1, square, 0.1),  # nothing found: a negative
        answer(2, circle, 0.4),  # unsure: replay does not ask it
        answer(2, square, 0.7, (0, 0, 16, 8)),
    ]


def build(dataset, replay=True, distill=False):
    categories = retention_categories(dataset.plan, ["circle", "square"])
    answers = starting_answers(categories)
    queries = retention_queries(
        dataset.plan, categories, answers, replay=replay, distill=distill, score_threshold=0.5,
        negative_threshold=0.25,
    )  # fmt: skip
    return categories, queries


def test_retention_prompts_get_ids_after_the_split(dataset):
    categories = retention_categories(dataset.plan, ["Circle", "square"])
    assert [(c.category_id, c.prompt) for c in categories.values()] == [(3, "circle"), (4, "square")]


def test_replay_asks_confident_positives_and_empty_negatives_only(dataset):
    _, queries = build(dataset)
    one, two = queries.per_image[1], queries.per_image[2]
    assert [(q.category_id, len(q.objects), q.supervised, q.distilled) for q in one] == [
        (3, 1, True, False),
        (4, 0, True, False),
    ]
    assert [(q.category_id, len(q.objects)) for q in two] == [(4, 1)]  # circle (0.4) left unasked
    assert (queries.objects, queries.uncertain) == (2, 1)
    pseudo = one[0].objects[0]
    assert pseudo.box == (16.0, 0.0, 24.0, 16.0) and pseudo.category_id == 3
    assert pseudo.segmentation["size"] == [32, 32]
    assert pseudo.annotation_id > 2  # numbered after the split's annotations


def test_distillation_asks_every_pair_and_keeps_unsure_ones_out_of_the_criterion(dataset):
    _, both = build(dataset, replay=True, distill=True)
    assert [(q.category_id, q.supervised, q.distilled) for q in both.per_image[2]] == [
        (3, False, True),  # unsure: distilled, no target for the criterion
        (4, True, True),
    ]
    _, only = build(dataset, replay=False, distill=True)
    flags = {(q.supervised, q.distilled, len(q.objects)) for qs in only.per_image.values() for q in qs}
    assert flags == {(False, True, 0)} and sum(len(q) for q in only.per_image.values()) == 4


def test_samples_carry_pseudo_label_targets_and_query_flags(dataset):
    _, queries = build(dataset, replay=True, distill=True)
    remedied = QueryDataset(dataset.plan, dataset.config, train=True, augment=False, retention=queries)
    sample = remedied[0]  # image 1
    assert sample.prompts == ["red box", "blue dot", "circle", "square"]
    assert sample.supervised == [True, True, True, True] and sample.distilled == [False, False, True, True]
    # the pseudo-label (16, 0)-(24, 16) on the 32 px canvas: cxcywh (20, 8, 8, 16) / 32
    torch.testing.assert_close(sample.targets[2]["boxes"], torch.tensor([[0.625, 0.25, 0.25, 0.5]]))
    assert sample.targets[2]["is_valid_mask"].tolist() == [True]
    assert sample.targets[2]["masks"][0].sum() == 8 * 16  # the starting model's mask, 8 x 16 px
    assert sample.targets[3]["boxes"].shape == (0, 4)
    batch = collate([sample, remedied[1]], word_tokenize)
    assert batch.prompts[4:] == ["red box", "blue dot", "circle", "square"]
    assert batch.supervised.tolist() == [True] * 4 + [True, True, False, True]
    assert batch.distilled.tolist() == [False, False, True, True] * 2
    plain = collate([dataset[0]], word_tokenize)
    assert plain.supervised is None and plain.distilled is None  # no remedies: no flags


def test_confusable_negatives_are_repeated_and_always_asked(dataset, tmp_path):
    _, queries = build(dataset)
    pairs = parse_pairs(
        ["blue dot -> circle", "square -> red box"], ["red box", "blue dot", "circle", "square"]
    )
    found = {1: {"circle"}}  # the starting model's confident circle on image 1
    queries.hard_negatives = hard_negatives(dataset.plan, queries, pairs, found)
    queries.repeats = 2
    # image 1: "blue dot" is absent and a circle is there; "square" (a replay negative) sits by a red box
    assert queries.hard_negatives == {1: frozenset({2, 4})}
    sampled = QueryDataset(
        dataset.plan, DataConfig(root=tmp_path, resolution=32, negatives=0), train=True, augment=False,
        retention=queries,
    )  # fmt: skip
    sample = sampled[0]
    assert sample.prompts == [
        "red box",
        "blue dot",
        "blue dot",
        "blue dot",
        "circle",
        "square",
        "square",
        "square",
    ]
    assert all(len(t["boxes"]) == 0 for t in sample.targets[1:4])
    assert sampled[1].prompts == ["blue dot", "square"]  # image 2: nothing confusable, no negative sampled


def test_pairs_must_name_prompts_of_the_run():
    assert parse_pairs(["Moon -> heart"], ["moon", "heart"]) == {("moon", "heart")}
    with pytest.raises(ValueError, match="not of the form"):
        parse_pairs(["moon heart"], ["moon", "heart"])
    with pytest.raises(ValueError, match=r"\['star'\] is no category"):
        parse_pairs(["star -> heart"], ["moon", "heart"])


def test_a_few_retention_queries_per_image_drawn_anew_each_epoch(dataset):
    _, queries = build(dataset, replay=False, distill=True)  # 2 distilled queries per image
    queries.sampled = 1
    remedied = QueryDataset(dataset.plan, dataset.config, train=True, augment=False, retention=queries)
    drawn = []
    for epoch in range(8):
        remedied.set_epoch(epoch)
        sample = remedied[0]
        assert sample.prompts[:2] == ["red box", "blue dot"] and len(sample.prompts) == 3
        assert sample.prompts == remedied[0].prompts  # a pure function of (seed, epoch, index)
        drawn.append(sample.prompts[2])
    assert set(drawn) == {"circle", "square"}  # both are drawn over the epochs
    assert queries.queries_per_image() == 1
