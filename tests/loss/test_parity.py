"""Parity of Sam3Criterion with Meta's sam3==0.1.4 loss (the reference), on seeded random batches.

Per case: the matchings of every layer equal the official matchers' exactly; then, fed the official
matchings, every component key and the total agree within rtol 1e-5 and the gradients with respect to
every output tensor within rtol 1e-4 (float32). Our ``_o2m`` values are unweighted, Meta's are multiplied
by ``o2m_weight``.
"""

from __future__ import annotations

import pytest
import torch
from official_reference import (
    Case,
    OfficialCriterion,
    leaf_copy,
    leaves,
    single_process_group,
    unavailable_reason,
)

from sam3tune.loss import (
    CriterionConfig,
    HungarianMatcherConfig,
    LossWeights,
    OneToManyMatcherConfig,
    Sam3Criterion,
)
from tests.meta_reference import reference_unavailable

REASON = unavailable_reason()


@pytest.fixture(autouse=True)
def _reference():
    if REASON is not None:
        reference_unavailable(REASON)


CASES = [
    Case("recipe_boxes_global", 1, [3, 1, 0, 2]),
    Case("recipe_masks_global", 2, [2, 0, 3, 1], mask_size=(8, 8)),
    Case("masks_local", 3, [1, 4, 2], mask_size=(8, 8), config={"normalization": "local"}),
    Case("masks_none", 4, [2, 2, 0], mask_size=(6, 10), config={"normalization": "none"}),
    Case("negatives_only", 5, [0, 0, 0], mask_size=(8, 8)),
    Case(
        "more_targets_than_queries",
        6,
        [5, 2, 4],
        num_queries=3,
        config={"o2m_matcher": OneToManyMatcherConfig(topk=2)},  # the official quantile needs topk <= Q
    ),
    Case("single_query", 7, [1, 0, 2], num_queries=1, o2m=False, mask_size=(8, 8)),
    Case("duplicate_o2m_assignments", 8, [4, 2, 6], duplicate_gt=True, mask_size=(8, 8)),
    Case("invalid_masks", 9, [3, 2, 4, 1], mask_size=(8, 8), invalid_mask_share=0.5),
    Case("extreme_logits", 10, [2, 3, 1], mask_size=(8, 8), extreme=True),
    Case("q200", 11, [7, 0, 12, 3], num_queries=200, mask_size=(8, 8)),
    Case(
        "valid_object_num_local",
        12,
        [3, 2, 4],
        zero_size_share=0.3,
        invisible_rows=(1,),
        config={"normalize_by_valid_object_num": True, "normalization": "local"},
    ),
    Case(
        "valid_object_num_global",
        13,
        [3, 2, 4],
        zero_size_share=0.4,
        mask_size=(8, 8),
        config={"normalize_by_valid_object_num": True},
    ),
    Case("zero_size_gt", 14, [3, 2, 4], zero_size_share=0.3, invisible_rows=(1,), mask_size=(8, 8)),
    Case("no_presence", 15, [2, 1, 3], presence=False),
    Case("o2m_matcher_on_aux", 16, [2, 3, 1], config={"use_o2m_matcher_on_o2m_aux": True}),
    Case(
        "no_batch_scale_no_padding",
        17,
        [2, 1, 3],
        config={"scale_by_find_batch_size": False, "pad_n_queries": None},
    ),
    Case("padding_scale", 18, [2, 1, 3], num_queries=10, config={"pad_scale_pos": 2.0, "pad_n_queries": 50}),
    Case(
        "custom_weights",
        19,
        [2, 1, 3],
        mask_size=(8, 8),
        config={
            "weights": LossWeights(
                loss_ce=3, presence_loss=0, loss_bbox=1, loss_giou=4, loss_mask=50, loss_dice=0
            ),
            "matcher": HungarianMatcherConfig(cost_class=1, cost_bbox=2, cost_giou=3, alpha=0.4, gamma=1.0),
            "o2m_matcher": OneToManyMatcherConfig(alpha=0.5, threshold=0.3, topk=3),
            "o2m_weight": 0.5,
            "pos_weight": 3.0,
            "alpha": 0.5,
            "gamma": 1.0,
            "focal_alpha": 0.4,
            "focal_gamma": 1.5,
            "presence_alpha": 0.3,
            "presence_gamma": 2.0,
        },
    ),
    Case("point_sampling", 20, [2, 1, 3], mask_size=(8, 8), config={"num_sample_points": 64}),
    Case("one_layer_no_o2m", 21, [2, 1], num_layers=1, o2m=False, mask_size=(8, 8)),
]


@pytest.fixture(scope="module")
def process_group():
    with single_process_group():
        yield


def _pairs(matching) -> list[tuple[int, int, int]]:
    return list(zip(*(t.tolist() for t in matching), strict=True))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_matches_official(case: Case, process_group) -> None:
    config = CriterionConfig(**case.config)
    raw, targets = case.build()
    reference = OfficialCriterion(config, with_masks=case.mask_size is not None)
    theirs, ours = leaf_copy(raw), leaf_copy(raw)
    official_targets = reference.targets(targets)
    official_outputs = reference.outputs(theirs, official_targets)
    official_matchings = reference.matchings(official_outputs, official_targets)

    criterion = Sam3Criterion(config)
    predictions, packed = criterion.prepare(ours, targets)
    our_matchings = criterion.match(predictions, packed)

    # 1. Matchings, exactly: Hungarian as sets of pairs, one-to-many in order.
    assert len(our_matchings.one_to_one) == len(official_matchings.one_to_one) == case.num_layers
    for mine, official in zip(our_matchings.one_to_one, official_matchings.one_to_one, strict=True):
        assert sorted(_pairs(mine)) == sorted(_pairs(official))
    if case.o2m:
        for layer, (mine, official) in enumerate(
            zip(our_matchings.one_to_many, official_matchings.one_to_many, strict=True)
        ):
            one_to_many = config.use_o2m_matcher_on_o2m_aux or layer == case.num_layers - 1
            if one_to_many:
                assert _pairs(mine) == _pairs(official)
            else:
                assert sorted(_pairs(mine)) == sorted(_pairs(official))
        if case.duplicate_gt:
            final = _pairs(our_matchings.one_to_many[-1])
            assert len({(b, q) for b, q, _ in final}) < len(final), "case must produce duplicate o2m pairs"
    else:
        assert our_matchings.one_to_many is None

    # 2. Values, fed the official matchings.
    torch.manual_seed(case.seed)  # point sampling draws the same points in both
    expected = reference(official_outputs, official_targets)
    torch.manual_seed(case.seed)
    result = criterion.compute(predictions, packed, official_matchings)
    assert set(result) - {"loss"} <= set(expected)
    for key in set(expected) - set(result) - {"core_loss"}:  # presence on o2m / without presence logits
        assert float(expected[key]) == 0.0, key
    for key, value in result.items():
        if key == "loss":
            want = expected["core_loss"]
        else:
            want = expected[key] / (config.o2m_weight if key.endswith("_o2m") else 1.0)
        torch.testing.assert_close(
            value.detach().double(), torch.as_tensor(want).detach().double(), rtol=1e-5, atol=1e-6, msg=key
        )

    # 3. Gradients with respect to every model output.
    result["loss"].backward()
    expected["core_loss"].backward()
    for (name, mine), (_, official) in zip(leaves(ours), leaves(theirs), strict=True):
        if official.grad is None:
            assert mine.grad is None or not mine.grad.any(), name
            continue
        assert mine.grad is not None, name
        scale = float(official.grad.abs().max())
        torch.testing.assert_close(mine.grad, official.grad, rtol=1e-4, atol=1e-6 * max(scale, 1.0), msg=name)
