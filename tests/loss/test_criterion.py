"""Sam3Criterion: keys, weighting, normalisation, input validation and config plumbing."""

import math

import pytest
import torch

from sam3tune.config import load_config
from sam3tune.loss import CriterionConfig, LossKey, LossWeights, Sam3Criterion, split_key


def _layer(g, batch, queries, o2m=True):
    d = {
        "pred_logits": torch.randn(batch, queries, generator=g),
        "pred_boxes": torch.rand(batch, queries, 4, generator=g) * 0.4 + 0.2,
        "presence_logits": torch.randn(batch, 1, generator=g),
    }
    if o2m:
        d["pred_logits_o2m"] = torch.randn(batch, queries, generator=g)
        d["pred_boxes_o2m"] = torch.rand(batch, queries, 4, generator=g) * 0.4 + 0.2
    return d


def make_batch(counts=(2, 0, 3), queries=6, layers=3, o2m=True, masks=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    batch = len(counts)
    outputs = _layer(g, batch, queries, o2m)
    outputs["aux_outputs"] = [_layer(g, batch, queries, o2m) for _ in range(layers - 1)]
    if masks:
        outputs["pred_masks"] = torch.randn(batch, queries, 4, 4, generator=g)
        if o2m:
            outputs["pred_masks_o2m"] = torch.randn(batch, queries, 4, 4, generator=g)
    targets = []
    for n in counts:
        t = {"boxes": torch.rand(n, 4, generator=g) * 0.4 + 0.2}
        if masks:
            t["masks"] = torch.rand(n, 14, 14, generator=g) > 0.5
        targets.append(t)
    return outputs, targets


def test_result_keys_follow_the_official_names():
    outputs, targets = make_batch(layers=3)
    result = Sam3Criterion(CriterionConfig(normalization="local"))(outputs, targets)
    for term in ("loss_ce", "presence_loss", "loss_bbox", "loss_giou", "ce_f1", "presence_dec_acc"):
        for suffix in ("", "_aux_0", "_aux_1"):
            assert f"{term}{suffix}" in result
            if not term.startswith("presence"):
                assert f"{term}{suffix}_o2m" in result
    assert {"loss_mask", "loss_dice", "loss_mask_o2m", "loss_dice_o2m"} <= set(result)
    assert "loss_mask_aux_0" not in result and "presence_loss_o2m" not in result
    assert all(v.dim() == 0 for v in result.values())


def test_total_is_the_weighted_sum_times_sqrt_batch():
    outputs, targets = make_batch(counts=(2, 1, 3, 1))
    criterion = Sam3Criterion(CriterionConfig(normalization="local"))
    result = criterion(outputs, targets)
    w = LossWeights()
    by_hand = 0.0
    for key, value in result.items():
        base = key.removesuffix("_o2m")
        for i in range(2):
            base = base.removesuffix(f"_aux_{i}")
        factor = 2.0 if key.endswith("_o2m") else 1.0
        by_hand += factor * getattr(w, base, 0.0) * float(value) if key != "loss" else 0.0
    assert math.isclose(float(result["loss"]), math.sqrt(4) * by_hand, rel_tol=1e-5)
    assert math.isclose(sum(criterion.contributions(result, 4).values()), float(result["loss"]), rel_tol=1e-5)
    unscaled = Sam3Criterion(CriterionConfig(normalization="local", scale_by_find_batch_size=False))
    assert math.isclose(float(unscaled(outputs, targets)["loss"]), by_hand, rel_tol=1e-5)


def test_weight_of():
    criterion = Sam3Criterion(CriterionConfig(o2m_weight=3.0))
    assert criterion.weight_of("loss_ce") == 20.0
    assert criterion.weight_of("loss_bbox_aux_4") == 5.0
    assert criterion.weight_of("loss_giou_aux_2_o2m") == 6.0
    assert criterion.weight_of("loss_mask_o2m") == 600.0
    assert criterion.weight_of("ce_f1_o2m") == 0.0 and criterion.weight_of("presence_dec_acc") == 0.0
    with pytest.raises(KeyError):
        criterion.weight_of("loss_class")
    assert criterion.loss_scale(9) == 3.0


def test_split_key():
    assert split_key("loss_ce") == LossKey("loss_ce", None, False)
    assert split_key("loss_giou_aux_2_o2m") == LossKey("loss_giou", 2, True)
    assert split_key("presence_dec_acc_aux_11") == LossKey("presence_dec_acc", 11, False)
    assert split_key("loss_mask_o2m") == LossKey("loss_mask", None, True)
    with pytest.raises(KeyError):
        split_key("Loss-CE")


def test_num_boxes_modes():
    _, targets = make_batch(counts=(2, 0, 3), masks=False)
    targets[2]["boxes"][1, 2] = 0.0  # one invisible (zero-width) GT
    cfg = CriterionConfig
    packed = Sam3Criterion().prepare(make_batch(counts=(2, 0, 3), masks=False)[0], targets)[1]
    assert Sam3Criterion(cfg(normalization="local")).num_boxes(packed) == 5.0
    assert Sam3Criterion(cfg(normalization="global")).num_boxes(packed) == 5.0  # no process group: local
    assert (
        float(Sam3Criterion(cfg(normalization="local", normalize_by_valid_object_num=True)).num_boxes(packed))
        == 4
    )
    assert (
        Sam3Criterion(cfg(normalization="none", normalize_by_valid_object_num=True)).num_boxes(packed) == 1.0
    )
    _, empty = make_batch(counts=(0, 0), masks=False)
    packed_empty = Sam3Criterion().prepare(make_batch(counts=(0, 0), masks=False)[0], empty)[1]
    assert Sam3Criterion(cfg(normalization="local")).num_boxes(packed_empty) == 1.0


def test_box_terms_scale_with_num_boxes_and_ce_does_not():
    outputs, targets = make_batch(masks=False)
    local = Sam3Criterion(CriterionConfig(normalization="local"))(outputs, targets)
    none = Sam3Criterion(CriterionConfig(normalization="none"))(outputs, targets)
    assert math.isclose(float(none["loss_bbox"]), 5 * float(local["loss_bbox"]), rel_tol=1e-6)
    assert math.isclose(float(none["loss_ce_o2m"]), float(local["loss_ce_o2m"]), rel_tol=1e-6)


def test_negatives_only_batch_is_finite_and_differentiable():
    outputs, targets = make_batch(counts=(0, 0, 0))
    leaves = [outputs["pred_logits"], outputs["presence_logits"]]
    for t in leaves:
        t.requires_grad_()
    result = Sam3Criterion()(outputs, targets)
    assert math.isfinite(float(result["loss"].detach()))
    assert float(result["loss_ce"].detach()) == 0.0  # no visible GT: no classification loss
    assert float(result["loss_bbox"].detach()) == 0.0
    result["loss"].backward()
    assert outputs["presence_logits"].grad.abs().sum() > 0  # the presence token is still supervised


def test_no_target_masks_gives_zero_mask_loss_and_all_invalid_masks_too():
    outputs, targets = make_batch()
    no_masks = [{"boxes": t["boxes"]} for t in targets]
    result = Sam3Criterion()(outputs, no_masks)
    assert float(result["loss_mask"]) == 0.0 and float(result["loss_dice_o2m"]) == 0.0
    for t in targets:
        t["is_valid_mask"] = torch.zeros(len(t["boxes"]), dtype=torch.bool)
    result = Sam3Criterion()(outputs, targets)
    assert float(result["loss_mask"]) == 0.0 and float(result["loss_dice"]) == 0.0


def test_float64_inputs_work():
    outputs, targets = make_batch()
    as_double = {k: v.double() for k, v in outputs.items() if k != "aux_outputs"}
    as_double["aux_outputs"] = [{k: v.double() for k, v in a.items()} for a in outputs["aux_outputs"]]
    result = Sam3Criterion()(as_double, targets)
    assert result["loss"].dtype == torch.float64
    assert math.isclose(float(result["loss"]), float(Sam3Criterion()(outputs, targets)["loss"]), rel_tol=1e-5)


def test_config_from_yaml_and_overrides(tmp_path):
    path = tmp_path / "loss.yaml"
    path.write_text("normalization: local\nweights:\n  loss_mask: 5\npad_n_queries: null\n")
    config = load_config(CriterionConfig, path, ["o2m_matcher.topk=6", "num_sample_points=12544"])
    assert (
        config.normalization == "local" and config.weights.loss_mask == 5.0 and config.weights.loss_dice == 10
    )
    assert config.pad_n_queries is None and config.o2m_matcher.topk == 6 and config.num_sample_points == 12544
    with pytest.raises(ValueError, match="normalization"):
        CriterionConfig(normalization="batch")


# --- input validation: a ValueError that says what was expected and what came ---


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda o, t: t[0].update(boxes=t[0]["boxes"] * 640), r"outside \[0, 1\].*pixel units"),
        (lambda o, t: t[2]["boxes"].__setitem__((0, 1), float("nan")), r"targets\[2\]\['boxes'\]\[0\].*NaN"),
        (lambda o, t: o.update(pred_logits=o["pred_logits"][..., None]), r"\(B, Q\).*squeeze"),
        (lambda o, t: t.pop(), r"B = 2 queries"),
        (
            lambda o, t: o["aux_outputs"][1].update(pred_boxes=o["pred_boxes"][:, :3]),
            r"aux_outputs'\]\[1\]\['pred_boxes'\]",
        ),
        (
            lambda o, t: o["aux_outputs"][0]["pred_logits"].__setitem__((0, 0), float("inf")),
            r"\[0\]\['pred_logits'\] contains NaN",
        ),
        (lambda o, t: t[2].update(masks=t[2]["masks"][:, :10]), r"same \(H, W\)"),
        (lambda o, t: t[0].update(masks=t[0]["masks"].float()), r"must be bool"),
        (lambda o, t: t[2].pop("masks"), r"has none"),
        (lambda o, t: t[0].update(masks=t[0]["masks"][:1]), r"n = 2"),
        (
            lambda o, t: o.update(presence_logits=o["presence_logits"][:, 0]),
            r"presence_logits'\] must have shape \(3, 1\)",
        ),
        (lambda o, t: o["aux_outputs"][0].pop("pred_logits_o2m"), r"every decoder layer or in none"),
        (lambda o, t: o.update(pred_masks=o["pred_masks"][:, :2]), r"pred_masks'\] must have shape"),
        (lambda o, t: t[0].update(is_valid_mask=torch.ones(2)), r"is_valid_mask"),
    ],
)
def test_bad_input_raises_a_clear_value_error(mutate, message):
    outputs, targets = make_batch()
    mutate(outputs, targets)
    with pytest.raises(ValueError, match=message):
        Sam3Criterion()(outputs, targets)


def test_boxes_slightly_outside_the_unit_range_are_accepted():
    outputs, targets = make_batch()
    targets[0]["boxes"][0] = torch.tensor([1.0000005, 0.5, 0.2, 0.2])
    assert math.isfinite(float(Sam3Criterion()(outputs, targets)["loss"]))


def test_bfloat16_outputs_under_autocast_are_computed_in_float32():
    outputs, targets = make_batch()
    low = {k: v.bfloat16() for k, v in outputs.items() if k != "aux_outputs"}
    low["aux_outputs"] = [{k: v.bfloat16() for k, v in a.items()} for a in outputs["aux_outputs"]]
    rounded = {k: v.float() for k, v in low.items() if k != "aux_outputs"}
    rounded["aux_outputs"] = [{k: v.float() for k, v in a.items()} for a in low["aux_outputs"]]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        result = Sam3Criterion()(low, targets)
    expected = Sam3Criterion()(rounded, targets)
    assert result["loss"].dtype == torch.float32
    for key, value in expected.items():
        torch.testing.assert_close(result[key], value, rtol=1e-5, atol=1e-6, msg=key)


def test_non_finite_matched_mask_prediction_is_reported():
    outputs, targets = make_batch()
    outputs["pred_masks_o2m"][:] = float("nan")
    with pytest.raises(ValueError, match=r"pred_masks_o2m'\] contains NaN"):
        Sam3Criterion()(outputs, targets)
