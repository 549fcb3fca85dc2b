import math

import pytest
import torch

from sam3tune.loss import HungarianMatcher, OneToManyMatcher, pack_targets
from sam3tune.loss.matcher import interpolated_quantile


def _pairs(matching):
    return list(zip(*(t.tolist() for t in matching), strict=True))


def _targets(*rows):
    return pack_targets(
        [{"boxes": torch.tensor(r, dtype=torch.float32).view(-1, 4)} for r in rows], torch.device("cpu")
    )


def test_hungarian_assigns_each_gt_its_own_prediction():
    gt0, gt1 = [0.3, 0.3, 0.2, 0.2], [0.7, 0.7, 0.2, 0.2]
    targets = _targets([], [gt0, gt1])  # query 0 has no GT: no pairs there
    boxes = torch.tensor([[gt0, gt0, gt0], [gt1, [0.5, 0.5, 0.1, 0.1], gt0]])
    logits = torch.zeros(2, 3)
    matching = HungarianMatcher()(logits, boxes, targets)
    # GT 0 of query 1 has global index 0 + 0, GT 1 global index 1; listed by GT index.
    assert _pairs(matching) == [(1, 2, 0), (1, 0, 1)]


def test_hungarian_class_cost_breaks_box_ties():
    gt = [0.5, 0.5, 0.2, 0.2]
    targets = _targets([gt])
    boxes = torch.tensor([[gt, gt]])
    matching = HungarianMatcher()(torch.tensor([[-2.0, 3.0]]), boxes, targets)
    assert _pairs(matching) == [(0, 1, 0)]  # the confident prediction has the lower focal cost


def test_hungarian_cost_by_hand():
    matcher = HungarianMatcher(cost_class=2, cost_bbox=5, cost_giou=2, alpha=0.25, gamma=2)
    pred = torch.tensor([[[[0.5, 0.5, 0.2, 0.2]]]])  # (L, R, Q, 4)
    gt = torch.tensor([[[0.6, 0.5, 0.2, 0.2]]])  # (R, T, 4)
    x = 0.7
    cost = matcher.cost_matrices(torch.tensor([[[x]]]), pred, gt)
    p = 1 / (1 + math.exp(-x))
    focal = 0.25 * (1 - p) ** 2 * -math.log(p) - 0.75 * p**2 * -math.log(1 - p)
    l1 = 0.1
    inter, union, enclosing = 0.1 * 0.2, 2 * 0.04 - 0.1 * 0.2, 0.3 * 0.2
    giou = inter / union - (enclosing - union) / enclosing
    assert math.isclose(float(cost), 5 * l1 + 2 * focal - 2 * giou, rel_tol=1e-5)


def test_hungarian_with_more_gt_than_predictions_matches_the_best_ones():
    a, b, c = [0.2, 0.2, 0.1, 0.1], [0.5, 0.5, 0.1, 0.1], [0.8, 0.8, 0.1, 0.1]
    targets = _targets([a, b, c])
    matching = HungarianMatcher()(torch.zeros(1, 2), torch.tensor([[c, a]]), targets)
    assert sorted(_pairs(matching)) == [(0, 0, 2), (0, 1, 0)]


def test_hungarian_layers_are_matched_independently_and_no_gt_gives_nothing():
    gt = [[0.3, 0.3, 0.2, 0.2], [0.7, 0.7, 0.2, 0.2]]
    targets = _targets(gt)
    boxes = torch.tensor([[gt], [gt[::-1]]])  # (L=2, B=1, Q=2, 4)
    layers = HungarianMatcher().match_layers(torch.zeros(2, 1, 2), boxes, targets)
    assert [_pairs(m) for m in layers] == [[(0, 0, 0), (0, 1, 1)], [(0, 1, 0), (0, 0, 1)]]
    empty = HungarianMatcher().match_layers(torch.zeros(2, 1, 2), boxes, _targets([]))
    assert all(len(m.batch_idx) == 0 for m in empty)


def test_one_to_many_takes_top_k_per_gt_above_threshold():
    gt = [0.5, 0.5, 0.2, 0.2]
    targets = _targets([], [gt])
    # IoU 1 for all; scores 0.3 p + 0.7, p = sigmoid(logit): the two most confident pass the top-2 test.
    logits = torch.tensor([[0.0] * 5, [0.0, 3.0, -1.0, 2.0, 1.0]])
    boxes = torch.tensor(gt).expand(2, 5, 4)
    matching = OneToManyMatcher(alpha=0.3, threshold=0.4, topk=2)(logits, boxes, targets)
    assert _pairs(matching) == [(1, 1, 0), (1, 3, 0)]
    strict = OneToManyMatcher(alpha=0.3, threshold=0.99, topk=2)(logits, boxes, targets)
    assert _pairs(strict) == []  # below the threshold


def test_one_to_many_can_assign_a_prediction_to_several_gt():
    a, b = [0.5, 0.5, 0.2, 0.2], [0.51, 0.5, 0.2, 0.2]
    targets = _targets([a, b])
    boxes = torch.tensor([[a, b, [0.1, 0.1, 0.05, 0.05], [0.9, 0.9, 0.05, 0.05]]])
    matching = OneToManyMatcher(topk=2)(torch.zeros(1, 4), boxes, targets)
    # both boxes are in the top 2 of both GT; pairs in (query, prediction, GT) order
    assert _pairs(matching) == [(0, 0, 0), (0, 0, 1), (0, 1, 0), (0, 1, 1)]


def test_one_to_many_with_fewer_predictions_than_topk_clamps_the_level():
    gt = [0.5, 0.5, 0.2, 0.2]
    targets = _targets([gt])
    logits = torch.tensor([[1.0, 2.0, 0.0]])
    matching = OneToManyMatcher(topk=4)(logits, torch.tensor(gt).expand(1, 3, 4), targets)
    assert _pairs(matching) == [(0, 0, 0), (0, 1, 0)]  # above the minimum score


@pytest.mark.parametrize("ties", [False, True])
def test_interpolated_quantile_equals_torch_quantile_bit_for_bit(ties):
    g = torch.Generator().manual_seed(1)
    for size in (4, 5, 17, 200, 333):
        for topk in (1, 2, 4):
            values = torch.rand(3, size, 6, generator=g)
            if ties:
                values = (values * 4).round() / 4
            level = max(1 - topk / size, 0.0)
            expected = torch.quantile(values, level, dim=1, keepdim=True)
            assert torch.equal(interpolated_quantile(values, level), expected)
