import pytest

from sam3tune.model import COMPONENTS, component_of, vit_block_index, vit_layer_id, vit_lr_scale
from sam3tune.model.components import model_path


def test_every_parameter_of_sam3_has_a_component(tiny):
    seen = {component_of(name) for name, _ in tiny.model.named_parameters()}
    assert seen == set(COMPONENTS)


@pytest.mark.parametrize(
    ("name", "component"),
    [
        ("vision_encoder.backbone.layers.1.attention.q_proj.weight", "vision"),
        ("vision_encoder.neck.fpn_layers.0.proj1.weight", "vision"),
        ("text_encoder.text_model.embeddings.token_embedding.weight", "text"),
        ("text_projection.weight", "text"),
        ("geometry_encoder.final_proj.weight", "geometry"),
        ("detr_encoder.layers.0.cross_attn.k_proj.bias", "detr_encoder"),
        ("detr_decoder.layers.0.self_attn.q_proj.weight", "detr_decoder"),
        ("detr_decoder.query_embed.weight", "detr_decoder"),
        ("detr_decoder.box_head.layer3.weight", "heads"),
        ("detr_decoder.presence_head.layer1.bias", "heads"),
        ("dot_product_scoring.query_proj.weight", "heads"),
        ("mask_decoder.mask_embedder.layers.0.weight", "mask_decoder"),
        # wrapper prefixes and peft infixes
        ("module.sam3.base_model.model.detr_decoder.layers.0.mlp.fc1.lora_A.default.weight", "detr_decoder"),
        ("sam3.base_model.model.detr_decoder.box_head.modules_to_save.default.layer1.weight", "heads"),
        ("sam3.base_model.model.vision_encoder.backbone.layers.0.mlp.fc1.base_layer.weight", "vision"),
    ],
)
def test_component_of(name, component):
    assert component_of(name) == component


def test_model_path_strips_wrappers_and_rejects_foreign_names():
    name = "module.sam3.base_model.model.detr_decoder.layers.0.self_attn.q_proj.lora_B.default.weight"
    assert model_path(name) == "detr_decoder.layers.0.self_attn.q_proj.weight"
    with pytest.raises(KeyError, match="not inside a Sam3Model"):
        component_of("backbone.blocks.0.weight")


def test_vit_lr_scale_over_a_model(tiny):
    from sam3tune.model import ModelConfig, build_training_model

    model = build_training_model(tiny, ModelConfig(name="tiny"))
    assert model.num_vit_blocks == 2
    scales = {n: vit_lr_scale(n, model.num_vit_blocks, 0.5) for n, _ in model.named_parameters()}
    assert scales["sam3.vision_encoder.backbone.layers.1.mlp.fc1.weight"] == 0.5
    assert scales["sam3.vision_encoder.backbone.layers.0.mlp.fc1.weight"] == 0.25
    assert scales["sam3.vision_encoder.backbone.embeddings.position_embeddings"] == 0.125
    assert scales["sam3.detr_decoder.query_embed.weight"] == 1.0


def test_vit_block_index_and_official_layer_decay():
    block = "sam3.vision_encoder.backbone.layers.{}.mlp.fc1.weight"
    assert vit_block_index(block.format(7)) == 7
    assert vit_block_index("vision_encoder.backbone.embeddings.position_embeddings") is None
    assert vit_block_index("detr_encoder.layers.3.mlp.fc1.weight") is None
    # official BEiT-style ids for a 32-block ViT: stem 0, block i -> i + 1, neck and others: no decay
    assert vit_layer_id("vision_encoder.backbone.embeddings.patch_embeddings.projection.weight", 32) == 0
    assert vit_layer_id("vision_encoder.backbone.layer_norm.weight", 32) == 0
    assert vit_layer_id(block.format(0), 32) == 1
    assert vit_layer_id("vision_encoder.neck.fpn_layers.0.proj1.weight", 32) is None
    assert vit_lr_scale(block.format(31), 32, 0.9) == pytest.approx(0.9)
    assert vit_lr_scale(block.format(0), 32, 0.9) == pytest.approx(0.9**32)
    assert vit_lr_scale("vision_encoder.backbone.embeddings.position_embeddings", 32, 0.9) == pytest.approx(
        0.9**33
    )
    assert vit_lr_scale("vision_encoder.neck.fpn_layers.0.proj1.weight", 32, 0.9) == 1.0
    assert vit_lr_scale("detr_decoder.layers.0.mlp.fc1.weight", 32, 0.9) == 1.0
