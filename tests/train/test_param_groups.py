import pytest
from train_standins import ToyModel, toy_role

from sam3tune.train.config import OptimConfig
from sam3tune.train.param_groups import (
    ParamRole,
    build_param_groups,
    layer_decay_scale,
    no_weight_decay_names,
)


def _groups(model, config=None):
    return build_param_groups(
        model.named_parameters(), toy_role, no_weight_decay_names(model), config or OptimConfig(), 2
    )


def _group_of(groups, model):
    ids = {id(p): g for g in groups for p in g["params"]}
    return {name: ids.get(id(p)) for name, p in model.named_parameters()}


def test_layer_decay_scale_follows_beit_depths():
    # 32 blocks as in SAM 3's ViT: last block x0.9, first x0.9^32, stem x0.9^33, no depth x1
    assert layer_decay_scale(32, 32, 0.9) == pytest.approx(0.9)
    assert layer_decay_scale(1, 32, 0.9) == pytest.approx(0.9**32)
    assert layer_decay_scale(0, 32, 0.9) == pytest.approx(0.9**33)
    assert layer_decay_scale(None, 32, 0.9) == 1.0
    with pytest.raises(ValueError, match="outside"):
        layer_decay_scale(34, 32, 0.9)


def test_recipe_learning_rates_and_weight_decay_per_parameter():
    model = ToyModel()
    by_name = _group_of(_groups(model), model)
    expected = {
        # name: (lr, weight decay)
        "vision_encoder.backbone.patch.weight": (2.5e-5 * 0.9**3, 0.1),
        "vision_encoder.backbone.patch.bias": (2.5e-5 * 0.9**3, 0.0),
        "vision_encoder.backbone.layer_norm.weight": (2.5e-5 * 0.9**3, 0.0),
        "vision_encoder.backbone.position_embeddings": (2.5e-5, 0.1),  # recipe: pos_embed not decayed
        "vision_encoder.backbone.layers.0.fc.weight": (2.5e-5 * 0.9**2, 0.1),
        "vision_encoder.backbone.layers.0.norm.weight": (2.5e-5 * 0.9**2, 0.0),
        "vision_encoder.backbone.layers.1.fc.weight": (2.5e-5 * 0.9, 0.1),
        "vision_encoder.backbone.layers.1.fc.bias": (2.5e-5 * 0.9, 0.0),
        "vision_encoder.neck.weight": (2.5e-5, 0.1),
        "text_encoder.embed.weight": (5e-6, 0.1),
        "text_encoder.layer_norm.bias": (5e-6, 0.0),
        "text_projection.weight": (5e-6, 0.1),
        "detr_decoder.query_embed": (8e-5, 0.1),
        "detr_decoder.fuse.weight": (8e-5, 0.1),
        "detr_decoder.box_head.bias": (8e-5, 0.0),
        "detr_decoder.class_head.weight": (8e-5, 0.1),
    }
    assert set(expected) <= set(by_name)
    for name, (lr, weight_decay) in expected.items():
        group = by_name[name]
        assert group["lr"] == pytest.approx(lr, rel=1e-12), name
        assert group["base_lr"] == group["lr"]
        assert group["weight_decay"] == weight_decay, name
    # every trainable parameter is in exactly one group
    groups = _groups(model)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    assert len({g["name"] for g in groups}) == len(groups)


def test_frozen_parameters_are_left_out_and_all_frozen_is_an_error():
    model = ToyModel()
    for param in model.vision_encoder.parameters():
        param.requires_grad_(False)
    by_name = _group_of(_groups(model), model)
    assert all(by_name[n] is None for n in by_name if n.startswith("vision_encoder."))
    assert by_name["detr_decoder.fuse.weight"] is not None
    for param in model.parameters():
        param.requires_grad_(False)
    with pytest.raises(ValueError, match="every parameter is frozen"):
        _groups(model)


def test_adapter_parameters_get_the_lora_rates():
    model = ToyModel()
    config = OptimConfig(lora_lr=3e-4, lora_weight_decay=0.01)
    named = [("detr_decoder.fuse.lora_A.default.weight", model.detr_decoder.fuse.weight)]
    named.append(("detr_decoder.fuse.lora_B.default.bias", model.detr_decoder.fuse.bias))
    groups = build_param_groups(
        named, toy_role, {"detr_decoder.fuse.lora_B.default.bias"}, config, num_vit_blocks=2
    )
    assert [(g["name"], g["lr"], g["weight_decay"]) for g in groups] == [
        ("lora", 3e-4, 0.01),
        ("lora.no_wd", 3e-4, 0.0),
    ]


def test_norm_parameters_are_found_by_module_type():
    model = ToyModel()
    names = no_weight_decay_names(model)
    assert "vision_encoder.backbone.layers.1.norm.weight" in names
    assert "text_encoder.layer_norm.weight" in names
    assert "detr_decoder.fuse.bias" in names
    assert "detr_decoder.fuse.weight" not in names
    assert "vision_encoder.backbone.position_embeddings" not in names


def test_role_is_frozen_dataclass():
    role = ParamRole("vision", vit_depth=3)
    with pytest.raises(AttributeError):
        role.vit_depth = 4
