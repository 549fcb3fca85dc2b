import pytest

from sam3tune.model import COMPONENTS, component_of, vit_depth
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


def test_vit_depth_over_a_model(tiny):
    from sam3tune.model import ModelConfig, build_training_model

    model = build_training_model(tiny, ModelConfig(name="tiny"))
    assert model.num_vit_blocks == 2
    depths = {n: vit_depth(n) for n, _ in model.named_parameters()}
    assert depths["sam3.vision_encoder.backbone.layers.1.mlp.fc1.weight"] == 2
    assert depths["sam3.vision_encoder.backbone.layers.0.mlp.fc1.weight"] == 1
    assert depths["sam3.vision_encoder.backbone.embeddings.patch_embeddings.projection.weight"] == 0
    assert depths["sam3.vision_encoder.backbone.embeddings.position_embeddings"] is None
    assert depths["sam3.detr_decoder.query_embed.weight"] is None


def test_vit_depth_follows_the_official_layer_ids():
    # official BEiT-style ids for a 32-block ViT: stem 0, block i -> i + 1; the position embedding (the
    # recipe's *pos_embed* override), the neck and other components: no decay
    block = "sam3.vision_encoder.backbone.layers.{}.mlp.fc1.weight"
    assert vit_depth(block.format(0)) == 1 and vit_depth(block.format(31)) == 32
    assert vit_depth("vision_encoder.backbone.embeddings.patch_embeddings.projection.weight") == 0
    assert vit_depth("vision_encoder.backbone.layer_norm.weight") == 0
    assert vit_depth("vision_encoder.backbone.embeddings.position_embeddings") is None
    assert vit_depth("vision_encoder.neck.fpn_layers.0.proj1.weight") is None
    assert vit_depth("detr_encoder.layers.3.mlp.fc1.weight") is None
    lora = "base_model.model.vision_encoder.backbone.layers.4.attention.qkv.lora_A.default.weight"
    assert vit_depth(lora) == 5
