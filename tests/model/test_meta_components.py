"""The key conversion is semantically right where same-shaped tensors could be swapped unnoticed: Meta's
own layers (small, random) and the Sam3Model layers loaded through ``convert_state_dict`` compute the same.
(The whole model at full size: tests/model/test_meta_parity.py, slow.)"""

import pytest
import torch
from transformers import CLIPTextConfig, CLIPTextModelWithProjection
from transformers.models.sam3.configuration_sam3 import Sam3DETREncoderConfig
from transformers.models.sam3.modeling_sam3 import Sam3DetrEncoderLayer

from sam3tune.model.meta_checkpoint import convert_state_dict
from tests.model.meta_sam3 import import_meta_modules


def _converted(module, meta_prefix: str, hf_prefix: str) -> dict:
    meta = {meta_prefix + k: v for k, v in module.state_dict().items()}
    out, _ = convert_state_dict(meta)
    assert all(k.startswith(hf_prefix) for k in out), sorted(out)[:3]
    return {k[len(hf_prefix) :]: v for k, v in out.items()}


def test_detr_encoder_layer_matches_meta():
    encoder, misc = import_meta_modules("model.encoder", "model.model_misc")
    torch.manual_seed(0)
    meta = encoder.TransformerEncoderLayer(
        activation="relu",
        d_model=32,
        dim_feedforward=64,
        dropout=0.0,
        pos_enc_at_attn=True,
        pos_enc_at_cross_attn_keys=False,
        pos_enc_at_cross_attn_queries=False,
        pre_norm=True,
        self_attention=misc.MultiheadAttentionWrapper(
            num_heads=4, dropout=0.0, embed_dim=32, batch_first=True
        ),
        cross_attention=misc.MultiheadAttentionWrapper(
            num_heads=4, dropout=0.0, embed_dim=32, batch_first=True
        ),
    ).eval()
    with torch.no_grad():  # distinct norms, so that a swapped norm shows
        for name, p in meta.named_parameters():
            if "norm" in name:
                p.normal_()
    hf = Sam3DetrEncoderLayer(
        Sam3DETREncoderConfig(hidden_size=32, num_attention_heads=4, intermediate_size=64, dropout=0.0)
    ).eval()
    hf.load_state_dict(
        _converted(meta, "transformer.encoder.layers.0.", "detr_encoder.layers.0."), strict=True
    )
    image, text, pos = torch.randn(2, 20, 32), torch.randn(2, 5, 32), torch.randn(2, 20, 32)
    with torch.no_grad():
        expected = meta(tgt=image, memory=text, query_pos=pos)
        got = hf(vision_feats=image, prompt_feats=text, vision_pos_encoding=pos)
    assert (got - expected).abs().max() < 1e-5


def test_clip_text_encoder_matches_meta():
    (text_encoder,) = import_meta_modules("model.text_encoder_ve")
    torch.manual_seed(0)
    meta = text_encoder.TextTransformer(
        context_length=8, vocab_size=64, width=32, heads=4, layers=2, output_dim=16, output_tokens=True
    ).eval()
    with torch.no_grad():  # Meta leaves some of these uninitialised (torch.empty) until its builder's init
        for name, p in meta.named_parameters():
            p.normal_(std=1.0 if "ln_" in name else 0.05)
    config = CLIPTextConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=8,
        projection_dim=16,
        hidden_act="gelu",
        pad_token_id=0,
        bos_token_id=62,
        eos_token_id=63,
    )
    hf = CLIPTextModelWithProjection(config).eval()
    state = _converted(meta, "backbone.language_backbone.encoder.", "text_encoder.")
    hf.load_state_dict(state, strict=True)
    ids = torch.randint(0, 62, (2, 8))
    with torch.no_grad():
        _, tokens = meta(ids)
        got = hf(input_ids=ids).last_hidden_state
    assert (got - tokens).abs().max() < 1e-5


def test_detr_decoder_layer_matches_meta():
    from transformers.models.sam3.configuration_sam3 import Sam3DETRDecoderConfig
    from transformers.models.sam3.modeling_sam3 import Sam3DetrDecoderLayer

    (decoder,) = import_meta_modules("model.decoder")
    torch.manual_seed(0)
    meta = decoder.TransformerDecoderLayer(
        activation="relu",
        d_model=32,
        dim_feedforward=64,
        dropout=0.0,
        cross_attention=torch.nn.MultiheadAttention(32, 4, dropout=0.0),
        n_heads=4,
        use_text_cross_attention=True,
    ).eval()
    with torch.no_grad():  # distinct norms, so that a swapped norm shows
        for name, p in meta.named_parameters():
            if "norm" in name:
                p.normal_()
    hf = Sam3DetrDecoderLayer(
        Sam3DETRDecoderConfig(hidden_size=32, num_attention_heads=4, intermediate_size=64, dropout=0.0)
    ).eval()
    hf.load_state_dict(
        _converted(meta, "transformer.decoder.layers.3.", "detr_decoder.layers.3."), strict=True
    )
    queries, batch, tokens, pixels = 6, 2, 5, 12
    tgt, query_pos = torch.randn(queries, batch, 32), torch.randn(queries, batch, 32)
    text, image, image_pos = (
        torch.randn(tokens, batch, 32),
        torch.randn(pixels, batch, 32),
        torch.randn(pixels, batch, 32),
    )
    presence = torch.randn(1, batch, 32)
    with torch.no_grad():
        out, presence_out = meta(
            tgt=tgt,
            tgt_query_pos=query_pos,
            memory_text=text,
            memory=image,
            memory_pos=image_pos,
            cross_attn_mask=torch.zeros(batch * 4, queries, pixels),
            presence_token=presence,
        )
        got = hf(
            hidden_states=torch.cat([presence, tgt]).transpose(0, 1),
            query_pos=query_pos.transpose(0, 1),
            text_features=text.transpose(0, 1),
            vision_features=image.transpose(0, 1),
            vision_pos_encoding=image_pos.transpose(0, 1),
        )
    expected = torch.cat([presence_out, out]).transpose(0, 1)
    assert (got - expected).abs().max() < 1e-5


def test_dot_product_scoring_matches_meta():
    from transformers.models.sam3.modeling_sam3 import Sam3DotProductScoring

    from sam3tune.model import NAMED_ARCHITECTURES
    from sam3tune.model.architectures import sam3_config

    (misc,) = import_meta_modules("model.model_misc")
    torch.manual_seed(0)
    prompt_mlp = misc.MLP(
        input_dim=16, hidden_dim=32, output_dim=16, num_layers=2, dropout=0.0, residual=True,
        out_norm=torch.nn.LayerNorm(16),
    )  # fmt: skip
    meta = misc.DotProductScoring(d_model=16, d_proj=16, prompt_mlp=prompt_mlp).eval()
    with torch.no_grad():
        meta.prompt_mlp.out_norm.weight.normal_()
    hf = Sam3DotProductScoring(sam3_config(NAMED_ARCHITECTURES["tiny"])).eval()
    hf.load_state_dict(_converted(meta, "dot_prod_scoring.", "dot_product_scoring."), strict=True)
    hs, text = torch.randn(2, 3, 6, 16), torch.randn(5, 3, 16)
    padding = torch.zeros(3, 5, dtype=torch.bool)
    padding[1, 3:] = True
    with torch.no_grad():
        expected = meta(hs, text, padding)
        got = hf(hs, text.transpose(0, 1), ~padding)
    assert (got - expected).abs().max() < 1e-5


@pytest.mark.parametrize("window", [4, 0], ids=["windowed", "global"])
def test_vit_block_matches_meta(window):
    """The fused qkv split and the norms; Meta's rotary tables are dropped and Sam3Model's own agree."""
    from transformers.models.sam3.configuration_sam3 import Sam3ViTConfig
    from transformers.models.sam3.modeling_sam3 import Sam3ViTLayer

    (vitdet,) = import_meta_modules("model.vitdet")
    torch.manual_seed(0)
    meta = vitdet.Block(
        dim=32, num_heads=4, mlp_ratio=2.0, qkv_bias=True, window_size=window, input_size=(8, 8),
        use_rope=True, rope_pt_size=(4, 4), rope_interp=True,
    ).eval()  # fmt: skip
    with torch.no_grad():
        for name, p in meta.named_parameters():
            if "norm" in name:
                p.normal_()
    config = Sam3ViTConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4, image_size=64,
        patch_size=8, pretrain_image_size=32, window_size=4, global_attn_indexes=[0],
    )  # fmt: skip
    hf = Sam3ViTLayer(config, window_size=window).eval()
    state = _converted(meta, "backbone.vision_backbone.trunk.blocks.5.", "vision_encoder.backbone.layers.5.")
    hf.load_state_dict(state, strict=True)
    x = torch.randn(2, 8, 8, 32)
    with torch.no_grad():
        assert (hf(x) - meta(x)).abs().max() < 1e-4


def test_mask_decoder_matches_meta():
    from transformers.models.sam3.configuration_sam3 import Sam3MaskDecoderConfig
    from transformers.models.sam3.modeling_sam3 import Sam3MaskDecoder

    seg, misc = import_meta_modules("model.maskformer_segmentation", "model.model_misc")
    torch.manual_seed(0)
    meta = seg.UniversalSegmentationHead(
        hidden_dim=16, upsampling_stages=3, aux_masks=False, presence_head=False, dot_product_scorer=None,
        act_ckpt=False, pixel_decoder=seg.PixelDecoder(hidden_dim=16, num_upsampling_stages=3),
        cross_attend_prompt=misc.MultiheadAttentionWrapper(num_heads=2, dropout=0, embed_dim=16),
    ).eval()  # fmt: skip
    with torch.no_grad():
        for name, p in meta.named_parameters():
            if "norm" in name:
                p.normal_()
    hf = Sam3MaskDecoder(
        Sam3MaskDecoderConfig(hidden_size=16, num_attention_heads=2, num_upsampling_stages=3)
    )
    hf.eval().load_state_dict(_converted(meta, "segmentation_head.", "mask_decoder."), strict=True)
    features = [torch.randn(1, 16, 16, 16), torch.randn(1, 16, 8, 8), torch.randn(1, 16, 4, 4)]
    queries, encoded, prompt = torch.randn(1, 5, 16), torch.randn(1, 16, 16), torch.randn(1, 3, 16)
    valid = torch.tensor([[True, True, False]])
    with torch.no_grad():
        expected = meta(
            backbone_feats=[f.clone() for f in features], obj_queries=queries[None],
            image_ids=torch.zeros(1, dtype=torch.long), encoder_hidden_states=encoded.transpose(0, 1),
            prompt=prompt.transpose(0, 1), prompt_mask=~valid,
        )  # fmt: skip
        got = hf(
            decoder_queries=queries, backbone_features=[f.clone() for f in features],
            encoder_hidden_states=encoded, prompt_features=prompt, prompt_mask=valid,
        )  # fmt: skip
    assert (got.pred_masks - expected["pred_masks"]).abs().max() < 1e-5
    assert (got.semantic_seg - expected["semantic_seg"]).abs().max() < 1e-5
