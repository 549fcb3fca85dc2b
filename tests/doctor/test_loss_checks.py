"""The loss table, the expected total (against its closed form) and the loss-side failure modes."""

import math

import pytest
import torch

from sam3tune.doctor.diagnosis import diagnose
from sam3tune.doctor.expected_loss import expected_total, uninformed_outputs
from sam3tune.doctor.loss_table import LossTable, LossTerm, loss_flags, loss_table
from sam3tune.loss import CriterionConfig, LossWeights, Sam3Criterion
from tests.data.conftest import FRUITS_NUTS
from tests.doctor.conftest import run_config

LN2 = math.log(2.0)


def _outputs(queries: int, rows: int, layers: int, generator: torch.Generator) -> dict:
    def layer() -> dict:
        return {
            "pred_logits": torch.randn(rows, queries, generator=generator),
            "pred_boxes": torch.rand(rows, queries, 4, generator=generator) * 0.5 + 0.25,
            "presence_logits": torch.randn(rows, 1, generator=generator),
            "pred_logits_o2m": torch.randn(rows, queries, generator=generator),
            "pred_boxes_o2m": torch.rand(rows, queries, 4, generator=generator) * 0.5 + 0.25,
        }

    outputs = layer()
    outputs["pred_masks"] = torch.randn(rows, queries, 8, 8, generator=generator)
    outputs["pred_masks_o2m"] = torch.randn(rows, queries, 8, 8, generator=generator)
    outputs["aux_outputs"] = [layer() for _ in range(layers - 1)]
    return outputs


def _targets() -> list[dict]:
    """Three queries: two objects, none (a negative), one object; 16 x 16 masks, one invalid."""
    boxes = [
        torch.tensor([[0.3, 0.3, 0.2, 0.4], [0.7, 0.6, 0.3, 0.3]]),
        torch.zeros(0, 4),
        torch.tensor([[0.5, 0.2, 0.6, 0.1]]),
    ]
    targets = []
    for query_boxes in boxes:
        masks = torch.zeros(len(query_boxes), 16, 16, dtype=torch.bool)
        for i, (cx, cy, w, h) in enumerate(query_boxes.tolist()):
            masks[
                i,
                int((cy - h / 2) * 16) : int((cy + h / 2) * 16),
                int((cx - w / 2) * 16) : int((cx + w / 2) * 16),
            ] = True
        targets.append(
            {
                "boxes": query_boxes,
                "masks": masks,
                "is_valid_mask": torch.ones(len(query_boxes), dtype=torch.bool),
            }
        )
    targets[0]["is_valid_mask"][1] = False
    return targets


def _giou_with_centre(cx, cy, w, h) -> float:
    """GIoU of box (cx, cy, w, h) with the centre box (0.25, 0.25, 0.75, 0.75)."""
    x0, y0, x1, y1 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
    inter = max(0.0, min(x1, 0.75) - max(x0, 0.25)) * max(0.0, min(y1, 0.75) - max(y0, 0.25))
    union = w * h + 0.25 - inter
    hull = (max(x1, 0.75) - min(x0, 0.25)) * (max(y1, 0.75) - min(y0, 0.25))
    return inter / union - (hull - union) / hull


def test_expected_total_equals_its_closed_form():
    """docs/doctor.md's derivation, term by term, for B = 3 queries, Q = 5, L = 3 layers, o2m on."""
    queries, layers = 5, 3
    targets = _targets()
    outputs = _outputs(queries, 3, layers, torch.Generator().manual_seed(0))
    rows, objects = len(targets), 3
    counts = [len(t["boxes"]) for t in targets]
    visible = [n for n in counts if n > 0]
    presence = 0.5 * LN2
    ce = LN2 * sum(0.25 * (queries - n) + 10 * n for n in visible) / (rows * max(queries, 200))
    boxes = [b for t in targets for b in t["boxes"].tolist()]
    l1 = sum(abs(0.5 - c) for b in boxes for c in b) / objects
    giou = sum(1 - _giou_with_centre(*b) for b in boxes) / objects
    focal = dice = 0.0
    for t in targets:
        for mask, valid in zip(t["masks"], t["is_valid_mask"], strict=True):
            if valid:
                fg, pixels = float(mask.sum()), mask.numel()
                focal += 0.25 * LN2 * (0.25 * fg + 0.75 * (pixels - fg)) / pixels
                dice += 1 - (fg + 1) / (0.5 * pixels + fg + 1)
    focal, dice = focal / objects, dice / objects
    # The one-to-many set (matched one per target, weight 2) repeats every term but presence.
    matched = layers * (20 * ce + 5 * l1 + 2 * giou) + 200 * focal + 10 * dice
    closed_form = math.sqrt(rows) * (layers * 20 * presence + 3 * matched)

    expected = expected_total(outputs, targets, CriterionConfig(o2m_weight=1.0))
    assert expected.recipe == pytest.approx(closed_form, rel=1e-5)
    assert expected.recipe_terms["presence_loss"] == pytest.approx(
        math.sqrt(rows) * layers * 20 * presence, rel=1e-6
    )
    assert expected.configured < expected.recipe  # o2m_weight 1 instead of 2
    assert (expected.low, expected.high) == pytest.approx((1e-3 * closed_form, 5 * closed_form), rel=1e-5)
    assert expected.order_of_magnitude == math.floor(math.log10(closed_form))


def test_uninformed_outputs_keep_the_structure():
    outputs = _outputs(4, 2, 2, torch.Generator().manual_seed(1))
    reference = uninformed_outputs(outputs)
    assert reference.keys() == outputs.keys() and len(reference["aux_outputs"]) == 1
    assert torch.equal(reference["pred_boxes_o2m"], torch.full((2, 4, 4), 0.5))
    assert not reference["pred_masks"].any() and not reference["aux_outputs"][0]["presence_logits"].any()


def test_table_takes_weights_and_scale_from_the_criterion():
    criterion = Sam3Criterion(CriterionConfig(o2m_weight=3.0, weights=LossWeights(loss_bbox=7.0)))
    outputs, targets = _outputs(6, 3, 3, torch.Generator().manual_seed(2)), _targets()
    result = criterion(outputs, targets)
    table = loss_table(criterion, result, len(targets))
    assert table.scale == math.sqrt(3) and table.total == pytest.approx(float(result["loss"]))
    assert len(table.terms) == len(result) - 1
    for term in table.terms:
        assert term.weight == criterion.weight_of(term.key)
        assert term.contribution == pytest.approx(table.scale * term.weight * term.raw, rel=1e-6)
    by_key = {t.key: t for t in table.terms}
    assert (
        by_key["loss_bbox_aux_1_o2m"].weight == 21.0 and by_key["loss_bbox_aux_1_o2m"].group == "one_to_many"
    )
    assert by_key["loss_bbox_aux_1"].group == "auxiliary" and by_key["loss_bbox_aux_1"].layer == 1
    assert by_key["loss_mask"].group == "final" and by_key["ce_f1"].weight == 0.0
    assert [t.key for t in table.terms][:2] == ["loss_ce", "presence_loss"]  # final layer first


def test_mask_weight_out_of_scale_dominates_and_blows_the_total(shapes):
    report = diagnose(run_config(shapes, "loss.weights.loss_mask=20000"))
    assert {"term_dominates", "weights_differ_from_recipe", "total_out_of_range"} == report.codes()
    assert report.codes("error") == {"total_out_of_range"}
    flag = next(f for f in report.flags if f.code == "weights_differ_from_recipe")
    assert flag.details == ("loss.weights.loss_mask: 20000.0 (recipe: 200.0)",)
    share = report.losses.term_totals()["loss_mask"] / report.losses.total
    assert share > 0.9


def test_classic_ten_thousand_from_no_normalisation():
    """normalization=none: box and mask terms summed over objects instead of averaged (4 fruit images,
    39 objects): the total lands near 10,000 instead of a few hundred."""
    report = diagnose(run_config(FRUITS_NUTS, "loop.batch_size=4", "loss.normalization=none"))
    assert report.codes("error") == {"total_out_of_range"}
    assert report.losses.total > 3000 and report.losses.total > 10 * report.expected.recipe
    assert report.expected.configured > 10 * report.expected.recipe
    assert "weights_differ_from_recipe" in report.codes("warning")


def test_total_far_below_expectation_is_a_warning(shapes):
    weights = [f"loss.weights.{k}=0.0001" for k in vars(LossWeights())]
    report = diagnose(run_config(shapes, *weights))
    flag = next(f for f in report.flags if f.code == "total_out_of_range")
    assert flag.severity == "warning" and report.codes("error") == set()


def test_non_finite_total():
    term = LossTerm("loss_ce", "loss_ce", "final", None, float("nan"), 20.0, float("nan"), 0.0)
    (flag,) = loss_flags(LossTable((term,), float("nan"), 1.0, 1))
    assert flag.code == "loss_not_finite" and "loss_ce" in flag.message
