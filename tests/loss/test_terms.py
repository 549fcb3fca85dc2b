"""Each loss term on tiny examples computed by hand (math module), independent of the implementation."""

import math

import pytest
import torch
import torch.nn.functional as F

from sam3tune.loss.box_loss import box_pair_losses
from sam3tune.loss.box_ops import box_cxcywh_to_xyxy
from sam3tune.loss.classification_loss import (
    binary_f1,
    iou_aware_bce,
    iou_aware_soft_target,
    positive_map,
    presence_accuracy,
    presence_loss,
)
from sam3tune.loss.focal_loss import sigmoid_focal_loss
from sam3tune.loss.mask_loss import mask_pair_losses


def sig(x):
    return 1 / (1 + math.exp(-x))


def bce(x, y):
    return -(y * math.log(sig(x)) + (1 - y) * math.log(1 - sig(x)))


def idx(*values):
    return torch.tensor(values, dtype=torch.int64)


def _bce_loss(logits, layer, batch, query, target, supervised, **kwargs):
    positive = positive_map(tuple(logits.shape), layer, batch, query)
    return iou_aware_bce(logits, positive, layer, batch, query, target, supervised, **kwargs)


def test_iou_aware_bce_by_hand():
    x = [[1.0, -2.0, 0.5], [3.0, 0.0, -1.0]]
    logits = torch.tensor([x])  # (L=1, B=2, Q=3)
    soft = torch.tensor([0.6])
    loss = _bce_loss(logits, idx(0), idx(0), idx(2), soft, torch.tensor([True, True]), pad_n_queries=None)
    negatives = [sig(v) ** 2 * bce(v, 0) for row in x for v in row]
    negatives.remove(sig(0.5) ** 2 * bce(0.5, 0))
    expected = (sum(negatives) + 10 * bce(0.5, 0.6)) / (2 * 3)
    assert math.isclose(float(loss), expected, rel_tol=1e-6)


def test_iou_aware_bce_masks_unsupervised_rows_and_pads_queries():
    logits = torch.tensor([[[1.0, -2.0], [3.0, 0.0]]])
    supervised = torch.tensor([True, False])  # row 1 has no visible GT: no classification loss at all
    loss = _bce_loss(logits, idx(), idx(), idx(), torch.zeros(0), supervised, pad_n_queries=200)
    expected = (sig(1.0) ** 2 * bce(1.0, 0) + sig(-2.0) ** 2 * bce(-2.0, 0)) / (2 * 200)
    assert math.isclose(float(loss), expected, rel_tol=1e-6)
    scaled = _bce_loss(
        logits, idx(0), idx(0), idx(0), torch.tensor([0.3]), supervised, pad_n_queries=200, pad_scale_pos=2.0
    )
    expected = (2 * 10 * bce(1.0, 0.3) + sig(-2.0) ** 2 * bce(-2.0, 0)) / (2 * 200)
    assert math.isclose(float(scaled), expected, rel_tol=1e-6)


def test_iou_aware_bce_last_pair_of_a_prediction_wins_and_layers_are_separate():
    logits = torch.tensor([[[0.5, -0.5]], [[2.0, 1.0]]])  # (L=2, B=1, Q=2)
    # layer 0: prediction 0 in two pairs (targets 0.2 then 0.7); layer 1: prediction 1 once
    loss = _bce_loss(
        logits, idx(0, 0, 1), idx(0, 0, 0), idx(0, 0, 1), torch.tensor([0.2, 0.7, 0.4]), torch.tensor([True]),
        pad_n_queries=None,
    )  # fmt: skip
    layer0 = (10 * bce(0.5, 0.7) + sig(-0.5) ** 2 * bce(-0.5, 0)) / 2
    layer1 = (sig(2.0) ** 2 * bce(2.0, 0) + 10 * bce(1.0, 0.4)) / 2
    torch.testing.assert_close(loss, torch.tensor([layer0, layer1]))


def test_soft_target_is_clamped_and_detached():
    prob = torch.tensor([0.81, 0.5], requires_grad=True)
    iou = torch.tensor([0.5, 0.0])
    target = iou_aware_soft_target(prob, iou, alpha=0.25)
    torch.testing.assert_close(target, torch.tensor([0.81**0.25 * 0.5**0.75, 0.01]))
    assert not target.requires_grad


def test_presence_loss_and_accuracy_by_hand():
    z = torch.tensor([[2.0, -1.0, 0.5]])
    present = torch.tensor([True, True, False])
    expected = 0.5 * (bce(2.0, 1) + bce(-1.0, 1) + bce(0.5, 0)) / 3
    assert math.isclose(float(presence_loss(z, present, alpha=0.5, gamma=0.0)), expected, rel_tol=1e-6)
    assert math.isclose(float(presence_accuracy(z, present)), 1 / 3, rel_tol=1e-6)


def test_sigmoid_focal_loss_by_hand():
    x, y = 0.8, 1.0
    p_t = sig(x)
    expected = 0.25 * (1 - p_t) ** 2 * bce(x, y)
    assert math.isclose(
        float(sigmoid_focal_loss(torch.tensor(x), torch.tensor(y), 0.25, 2.0)), expected, rel_tol=1e-6
    )
    soft = float(sigmoid_focal_loss(torch.tensor(x), torch.tensor(0.3), 0.25, 2.0))
    p = sig(x)
    p_t = p * 0.3 + (1 - p) * 0.7
    assert math.isclose(soft, (0.25 * 0.3 + 0.75 * 0.7) * (1 - p_t) ** 2 * bce(x, 0.3), rel_tol=1e-6)


def test_binary_f1_by_hand():
    logits = torch.tensor([[[3.0, 2.0, -1.0, -2.0]], [[-1.0, -1.0, -1.0, -1.0]]])
    positive = torch.tensor([[[True, False, True, False]], [[True, False, False, False]]])
    # layer 0: tp 1, fp 1, fn 1 -> 2/4; layer 1: no true positive -> 0
    torch.testing.assert_close(binary_f1(logits, positive), torch.tensor([0.5, 0.0]))


def test_box_pair_losses_by_hand():
    pred = torch.tensor([[0.5, 0.5, 0.2, 0.2]])
    target = torch.tensor([[0.6, 0.5, 0.2, 0.4]])
    losses = box_pair_losses(pred, target, box_cxcywh_to_xyxy(target))
    assert math.isclose(float(losses.l1), 0.1 + 0.2, rel_tol=1e-5)
    inter, union, enclosing = 0.1 * 0.2, 0.04 + 0.08 - 0.02, 0.3 * 0.4
    assert math.isclose(float(losses.iou), inter / union, rel_tol=1e-5)
    assert math.isclose(
        float(losses.giou), 1 - (inter / union - (enclosing - union) / enclosing), rel_tol=1e-5
    )


def test_mask_losses_by_hand_at_equal_resolution():
    x = [[2.0, -1.0], [0.5, -3.0]]
    y = [[True, False], [True, True]]
    focal, dice = mask_pair_losses(torch.tensor([x]), torch.tensor([y]), alpha=0.25, gamma=2.0)
    pixels = [(x[i][j], float(y[i][j])) for i in range(2) for j in range(2)]
    expected_focal = 0
    for v, t in pixels:
        p_t = sig(v) if t else 1 - sig(v)
        expected_focal += (0.25 if t else 0.75) * (1 - p_t) ** 2 * bce(v, t) / 4
    s = [sig(v) for v, _ in pixels]
    inter = sum(si * t for si, (_, t) in zip(s, pixels, strict=True))
    expected_dice = 1 - (2 * inter + 1) / (sum(s) + 3 + 1)
    assert math.isclose(float(focal), expected_focal, rel_tol=1e-5)
    assert math.isclose(float(dice), expected_dice, rel_tol=1e-5)


@pytest.mark.parametrize(("alpha", "gamma"), [(0.25, 2.0), (0.4, 1.5), (1.0, 2.0), (0.25, 0.0)])
def test_dense_mask_losses_and_gradient_equal_plain_autograd(alpha, gamma):
    g = torch.Generator().manual_seed(3)
    logits = (torch.randn(5, 9, 7, generator=g, dtype=torch.float64) * 4).requires_grad_()
    target = torch.rand(5, 31, 25, generator=g) < 0.3
    focal, dice = mask_pair_losses(logits, target, alpha, gamma)
    up = F.interpolate(logits[:, None], size=(31, 25), mode="bilinear", align_corners=False)[:, 0].flatten(1)
    y = target.flatten(1).double()
    ref_focal = sigmoid_focal_loss(up, y, alpha, gamma).mean(dim=1)
    p = up.sigmoid()
    ref_dice = 1 - (2 * (p * y).sum(1) + 1) / (p.sum(1) + y.sum(1) + 1)
    torch.testing.assert_close(focal, ref_focal)
    torch.testing.assert_close(dice, ref_dice)
    w_f, w_d = (
        torch.rand(5, generator=g, dtype=torch.float64),
        torch.rand(5, generator=g, dtype=torch.float64),
    )
    (grad,) = torch.autograd.grad((focal * w_f).sum() + (dice * w_d).sum(), logits)
    (ref_grad,) = torch.autograd.grad((ref_focal * w_f).sum() + (ref_dice * w_d).sum(), logits)
    torch.testing.assert_close(grad, ref_grad)


def test_dense_mask_losses_chunking_does_not_change_results(monkeypatch):
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(7, 6, 6, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.rand(7, 21, 21, generator=g) < 0.5
    whole = mask_pair_losses(logits, target)
    (grad_whole,) = torch.autograd.grad(sum(t.sum() for t in whole), logits)
    monkeypatch.setattr("sam3tune.loss.mask_loss._CHUNK_ELEMENTS", 2 * 21 * 21)  # chunks of 2 pairs
    chunked = mask_pair_losses(logits, target)
    (grad_chunked,) = torch.autograd.grad(sum(t.sum() for t in chunked), logits)
    torch.testing.assert_close(chunked, whole)
    torch.testing.assert_close(grad_chunked, grad_whole)


def test_point_sampled_mask_losses_estimate_the_dense_ones():
    # uniform points only (no importance sampling): a Monte-Carlo estimate of the dense per-pixel means
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(3, 32, 32, generator=g) * 2
    target = F.interpolate(torch.randn(3, 1, 8, 8, generator=g), size=(112, 112), mode="bilinear")[:, 0] > 0
    dense_focal, dense_dice = mask_pair_losses(logits, target)
    torch.manual_seed(0)
    focal, dice = mask_pair_losses(logits, target, num_points=40000, importance_sample_ratio=0.0)
    torch.testing.assert_close(focal, dense_focal, rtol=0.05, atol=0)
    torch.testing.assert_close(dice, dense_dice, rtol=0.05, atol=0)


def test_no_pairs_give_empty_losses():
    focal, dice = mask_pair_losses(torch.zeros(0, 4, 4), torch.zeros(0, 8, 8, dtype=torch.bool))
    assert focal.shape == dice.shape == (0,)
