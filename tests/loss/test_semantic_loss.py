"""The semantic-head loss: each term on hand-computed cases, the criterion's total, and parity with Meta's
``SemanticSegCriterion`` (segmentation-recipe settings) on the CPU."""

from __future__ import annotations

import math

import pytest
import torch

from sam3tune.loss.semantic_loss import SemanticCriterion, semantic_iou, semantic_terms
from tests.loss.official_reference import load_official, unavailable_reason

LN2 = math.log(2.0)


def test_focal_and_dice_by_hand():
    # logits 0 -> p = 1/2 everywhere; target [1, 0]: BCE = ln 2, (1 - p_t)^2 = 1/4, alpha_t = 0.6 / 0.4
    logits = torch.zeros(1, 1, 1, 2)
    target = torch.tensor([[[True, False]]])
    terms = semantic_terms(logits, target)
    assert float(terms["loss_semantic_seg"]) == pytest.approx(
        0.25 * LN2 * (0.6 + 0.4) / 2 / (1 + 1e-6), rel=1e-6
    )
    # dice: 1 - (2 * 0.5 + 1) / (1 + 1 + 1) = 1/3
    assert float(terms["loss_semantic_dice"]) == pytest.approx((1 / 3) / (1 + 1e-6), rel=1e-6)


def test_confident_logits_by_hand():
    # x = ln 3 -> p = 3/4 on both pixels; target [1, 0]
    x = math.log(3.0)
    terms = semantic_terms(torch.full((1, 1, 2), x), torch.tensor([[[True, False]]]))
    on = 0.6 * (1 / 4) ** 2 * -math.log(3 / 4)  # y = 1: p_t = 3/4
    off = 0.4 * (3 / 4) ** 2 * -math.log(1 / 4)  # y = 0: p_t = 1/4
    assert float(terms["loss_semantic_seg"]) == pytest.approx((on + off) / 2, rel=1e-5)
    assert float(terms["loss_semantic_dice"]) == pytest.approx(1 - (2 * 0.75 + 1) / (1.5 + 1 + 1), rel=1e-5)


def test_absent_classes_add_nothing_and_do_not_count():
    logits = torch.zeros(2, 1, 1, 2)
    targets = torch.tensor([[[True, False]], [[False, False]]])
    alone = semantic_terms(logits[:1], targets[:1])
    both = semantic_terms(logits, targets)
    for key in alone:
        assert float(both[key]) == pytest.approx(float(alone[key]), rel=1e-7)
    nothing = semantic_terms(logits[1:], targets[1:])
    assert float(nothing["loss_semantic_seg"]) == 0.0 and float(nothing["loss_semantic_dice"]) == 0.0


def test_ignored_pixels_leave_every_sum():
    logits = torch.zeros(1, 1, 1, 3)
    target = torch.tensor([[[True, False, True]]])
    valid = torch.tensor([[[True, False, False]]])
    terms = semantic_terms(logits, target, valid)
    # one valid pixel (y = 1): focal 0.6 * 1/4 * ln 2; dice 1 - (2 * 0.5 + 1) / (0.5 + 1 + 1) = 0.2
    assert float(terms["loss_semantic_seg"]) == pytest.approx(0.15 * LN2, rel=1e-5)
    assert float(terms["loss_semantic_dice"]) == pytest.approx(0.2, rel=1e-5)
    # a class whose only pixels are ignored is absent
    none = semantic_terms(logits, target, torch.tensor([[[False, True, False]]]))
    assert float(none["loss_semantic_seg"]) == 0.0


def test_logits_are_upsampled_bilinearly_to_the_target():
    coarse = torch.tensor([[[[0.0, 2.0]]]])  # (1, 1, 1, 2) -> (1, 4): [0, 0.5, 1.5, 2] (align_corners=False)
    target = torch.tensor([[[True, True, False, False]]])
    fine = torch.tensor([[[0.0, 0.5, 1.5, 2.0]]])
    up, direct = semantic_terms(coarse, target), semantic_terms(fine, target)
    for key in up:
        assert float(up[key]) == pytest.approx(float(direct[key]), rel=1e-6)


def test_semantic_iou():
    logits = torch.tensor([[[1.0, 1.0, -1.0, -1.0]], [[1.0, -1.0, -1.0, -1.0]]])
    targets = torch.tensor([[[True, False, False, False]], [[False, False, False, False]]])
    assert float(semantic_iou(logits, targets)) == pytest.approx(0.5)  # only the present class counts
    assert float(semantic_iou(logits[1:], targets[1:])) == 1.0


def test_criterion_total_by_hand():
    outputs = {
        "semantic_seg": torch.zeros(2, 1, 1, 2, requires_grad=True),
        "presence_logits": torch.zeros(2, 1),
        "aux_outputs": [{"presence_logits": torch.zeros(2, 1)}],
    }
    targets = [
        {"boxes": torch.zeros(0, 4), "semantic_mask": torch.tensor([[True, False]])},
        {"boxes": torch.zeros(0, 4), "semantic_mask": torch.tensor([[False, False]])},
    ]
    result = SemanticCriterion()(outputs, targets)
    focal, dice = 0.125 * LN2 / (1 + 1e-6), (1 / 3) / (1 + 1e-6)
    presence = 0.5 * LN2  # 0.5 * BCE(0, y) for both queries
    assert float(result["presence_loss"]) == pytest.approx(presence, rel=1e-6)
    assert float(result["presence_loss_aux_0"]) == pytest.approx(presence, rel=1e-6)
    expected = math.sqrt(2) * (20 * focal + 30 * dice + 20 * 2 * presence)
    assert float(result["loss"].detach()) == pytest.approx(expected, rel=1e-6)
    result["loss"].backward()
    grad = outputs["semantic_seg"].grad
    assert grad[1].abs().sum() == 0  # the absent class's map gets no gradient from the semantic terms
    assert grad[0, 0, 0, 0] < 0 < grad[0, 0, 0, 1]  # raise the class pixel, lower the other


def test_criterion_refuses_outputs_without_semantic_head():
    with pytest.raises(ValueError, match="semantic_seg"):
        SemanticCriterion()(
            {"presence_logits": torch.zeros(1, 1)}, [{"semantic_mask": torch.ones(2, 2, dtype=torch.bool)}]
        )


reason = unavailable_reason()


@pytest.mark.skipif(reason is not None, reason=reason or "")
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_parity_with_meta_semantic_seg_criterion(seed):
    official = load_official().loss_fns.SemanticSegCriterion(
        weight_dict={"loss_semantic_seg": 20.0, "loss_semantic_presence": 1.0, "loss_semantic_dice": 30.0},
        presence_head=True,
        presence_loss=False,
        focal=True,
        focal_alpha=0.6,
        focal_gamma=2.0,
        downsample=False,
    )
    generator = torch.Generator().manual_seed(seed)
    logits = (torch.randn(4, 1, 9, 9, generator=generator) * 3).requires_grad_(True)
    targets = torch.rand(4, 32, 32, generator=generator) > 0.6
    targets[1] = False  # an absent class
    if seed == 2:
        targets[:] = False  # every class absent
    ours = semantic_terms(logits, targets)
    (ours["loss_semantic_seg"] * 20 + ours["loss_semantic_dice"] * 30).backward()
    our_grad = logits.grad.clone()
    logits.grad = None
    theirs = official.get_loss({"semantic_seg": logits, "presence_logit": None}, {"semantic_masks": targets})
    for key in ("loss_semantic_seg", "loss_semantic_dice"):
        assert float(ours[key].detach()) == pytest.approx(float(theirs[key].detach()), rel=1e-5, abs=1e-7), (
            key
        )
    assert float(semantic_iou(logits.detach(), targets)) == pytest.approx(
        float(theirs["miou_semantic_seg"]), rel=1e-5
    )
    (theirs["loss_semantic_seg"] * 20 + theirs["loss_semantic_dice"] * 30).backward()
    torch.testing.assert_close(our_grad, logits.grad, rtol=1e-4, atol=1e-7)
