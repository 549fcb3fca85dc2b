"""Distillation terms on hand-made outputs: zero for a student equal to its teacher, the Bernoulli KL and
the score-weighted box distance by hand, masks only where the teacher is confident, gradients to the
student only."""

import math

import pytest
import torch

from sam3tune.loss.distillation import bernoulli_kl, distillation_terms


def outputs(logits, presence, boxes, masks=None):
    out = {
        "pred_logits": torch.tensor(logits, dtype=torch.float32),
        "presence_logits": torch.tensor(presence, dtype=torch.float32),
        "pred_boxes": torch.tensor(boxes, dtype=torch.float32),
    }
    if masks is not None:
        out["pred_masks"] = torch.tensor(masks, dtype=torch.float32)
    return out


def test_bernoulli_kl_by_hand():
    p, q = 0.8, 0.6
    expected = p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))
    logit = lambda x: math.log(x / (1 - x))  # noqa: E731
    value = bernoulli_kl(torch.tensor([logit(p)]), torch.tensor([logit(q)]))
    assert value.item() == pytest.approx(expected, rel=1e-5)
    assert bernoulli_kl(torch.tensor([1.3]), torch.tensor([1.3])).item() == 0.0


def test_terms_are_zero_when_the_student_answers_like_the_teacher():
    teacher = outputs(
        [[2.0, -3.0]], [[1.0]], [[[0.5, 0.5, 0.2, 0.2], [0.1, 0.1, 0.1, 0.1]]], [[[[3.0]], [[-1.0]]]]
    )
    student = {k: v.clone().requires_grad_() for k, v in teacher.items()}
    terms = distillation_terms(student, teacher, weight=10.0)
    assert all(terms[k].item() == 0.0 for k in terms)


def test_terms_by_hand_for_one_query():
    # two proposals: the teacher is sure of the first (score 0.88 * 0.73), not of the second
    teacher = outputs(
        [[2.0, -3.0]], [[1.0]], [[[0.5, 0.5, 0.2, 0.2], [0.1, 0.1, 0.1, 0.1]]], [[[[3.0]], [[-1.0]]]]
    )
    student = outputs(
        [[0.0, 0.0]], [[0.0]], [[[0.6, 0.5, 0.2, 0.2], [0.3, 0.1, 0.1, 0.1]]], [[[[0.0]], [[0.0]]]]
    )
    for value in student.values():
        value.requires_grad_()
    terms = distillation_terms(student, teacher, weight=2.0, mask_score=0.5)
    kl = lambda t, s: bernoulli_kl(torch.tensor(t), torch.tensor(s)).item()  # noqa: E731
    score = torch.tensor([2.0, -3.0]).sigmoid() * torch.tensor(1.0).sigmoid()
    assert terms["distill_logits"].item() == pytest.approx(kl(2.0, 0.0) + kl(-3.0, 0.0), rel=1e-5)
    assert terms["distill_presence"].item() == pytest.approx(kl(1.0, 0.0), rel=1e-5)
    assert terms["distill_boxes"].item() == pytest.approx(float(score[0] * 0.1 + score[1] * 0.2), rel=1e-5)
    assert score[0] > 0.5 > score[1]  # the mask term sees the first proposal only
    assert terms["distill_masks"].item() == pytest.approx(kl(3.0, 0.0), rel=1e-5)
    total = sum(
        terms[k].item() for k in ("distill_logits", "distill_presence", "distill_boxes", "distill_masks")
    )
    assert terms["distill"].item() == pytest.approx(2.0 * total, rel=1e-6)
    terms["distill"].backward()
    assert student["pred_logits"].grad.abs().sum() > 0 and student["pred_masks"].grad[0, 1].abs().sum() == 0
    assert teacher["pred_logits"].grad is None  # targets only


def test_terms_average_over_distilled_queries():
    teacher = outputs([[2.0], [2.0]], [[1.0], [1.0]], [[[0.5] * 4], [[0.5] * 4]])
    one = distillation_terms(
        outputs([[0.0]], [[0.0]], [[[0.5] * 4]]), outputs([[2.0]], [[1.0]], [[[0.5] * 4]]), 1.0
    )
    two = distillation_terms(
        outputs([[0.0], [0.0]], [[0.0], [0.0]], [[[0.5] * 4], [[0.5] * 4]]), teacher, 1.0
    )
    assert two["distill"].item() == pytest.approx(one["distill"].item())
    assert two["distill_masks"].item() == 0.0  # no masks given
