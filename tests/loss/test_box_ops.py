import math

import torch

from sam3tune.loss.box_ops import (
    box_area,
    box_cxcywh_to_xyxy,
    box_xyxy_to_cxcywh,
    elementwise_box_iou,
    pairwise_box_iou,
    pairwise_generalized_box_iou,
)


def test_conversions_round_trip_and_values():
    cxcywh = torch.tensor([[0.5, 0.5, 0.2, 0.4], [0.1, 0.9, 0.0, 0.2]])
    xyxy = box_cxcywh_to_xyxy(cxcywh)
    torch.testing.assert_close(xyxy, torch.tensor([[0.4, 0.3, 0.6, 0.7], [0.1, 0.8, 0.1, 1.0]]))
    torch.testing.assert_close(box_xyxy_to_cxcywh(xyxy), cxcywh)
    torch.testing.assert_close(box_area(xyxy), torch.tensor([0.08, 0.0]))


def test_overlapping_boxes_by_hand():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0]])
    iou, union = pairwise_box_iou(a, b)
    assert math.isclose(float(iou), 1 / 7, rel_tol=1e-6) and math.isclose(float(union), 7.0)
    # enclosing box 3 x 3 = 9: GIoU = 1/7 - (9 - 7)/9
    assert math.isclose(float(pairwise_generalized_box_iou(a, b)), 1 / 7 - 2 / 9, rel_tol=1e-6)


def test_disjoint_and_degenerate_boxes():
    a = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    far = torch.tensor([[2.0, 0.0, 3.0, 1.0]])
    assert float(pairwise_box_iou(a, far)[0]) == 0.0
    assert math.isclose(float(pairwise_generalized_box_iou(a, far)), -1 / 3, rel_tol=1e-6)
    line = torch.tensor([[0.5, 0.0, 0.5, 1.0]])  # zero width: IoU 0, GIoU -(1 - 1)/1 = 0
    iou, giou = elementwise_box_iou(a, line)
    assert float(iou) == 0.0 and float(giou) == 0.0


def test_pairwise_broadcasts_and_elementwise_is_its_diagonal():
    g = torch.Generator().manual_seed(0)
    boxes1 = box_cxcywh_to_xyxy(torch.rand(3, 5, 4, generator=g) * 0.5 + 0.1)
    boxes2 = box_cxcywh_to_xyxy(torch.rand(3, 5, 4, generator=g) * 0.5 + 0.1)
    iou, _ = pairwise_box_iou(boxes1, boxes2)
    giou = pairwise_generalized_box_iou(boxes1, boxes2)
    assert iou.shape == giou.shape == (3, 5, 5)
    diag_iou, diag_giou = elementwise_box_iou(boxes1.flatten(0, 1), boxes2.flatten(0, 1))
    torch.testing.assert_close(diag_iou.view(3, 5), iou.diagonal(dim1=1, dim2=2))
    torch.testing.assert_close(diag_giou.view(3, 5), giou.diagonal(dim1=1, dim2=2))
    assert bool((giou <= iou).all()) and bool((giou >= -1).all())
