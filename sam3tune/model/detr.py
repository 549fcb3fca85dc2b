"""The DETR encoder and decoder passes of HF Sam3, run layer by layer.

Running the layers here (instead of ``Sam3DetrDecoder.forward``) gives the training forward what HF's
forward does not: every layer's box reference with its gradient, presence logits before HF's +-10 clamp,
the one-to-many (DAC) query branch, and per-layer activation checkpointing. In eval mode and without
DAC the arithmetic is the same as HF's, which ``tests/model/test_training_model.py`` checks.

DAC (official SAM 3 training): the Q learned queries and reference boxes are used twice; the second
copy ("one-to-many") skips self-attention and takes the residual only, so its self-attention block is
``LayerNorm(x)``; text and image cross-attention and the MLP run on all tokens. The presence token and
the one-to-one queries never see the one-to-many ones, so one-to-one results do not change.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers.masking_utils import create_bidirectional_mask

from sam3tune.model.checkpointing import run_maybe_checkpointed


def inverse_sigmoid(x: Tensor, eps: float = 1e-3) -> Tensor:
    """log(x / (1 - x)) with x clipped to [0, 1] and both terms kept above ``eps`` (SAM 3's convention)."""
    x = x.clamp(0.0, 1.0)
    return torch.log(x.clamp(min=eps) / (1.0 - x).clamp(min=eps))


def run_detr_encoder(
    encoder: nn.Module,
    image_features: Tensor,
    image_positions: Tensor,
    text_features: Tensor,
    text_mask: Tensor,
    checkpointed: bool,
) -> Tensor:
    """Fuse text into image features.

    image_features, image_positions: (B, d, H, W); text_features: (B, L, d); text_mask: (B, L) bool,
    True = real token. Returns the encoded image tokens (B, H*W, d).
    """
    tokens = image_features.flatten(2).transpose(1, 2)
    positions = image_positions.flatten(2).transpose(1, 2)
    text_attention = create_bidirectional_mask(
        config=encoder.config,
        inputs_embeds=tokens,
        attention_mask=text_mask,
        encoder_hidden_states=text_features,
    )
    for layer in encoder.layers:
        tokens = run_maybe_checkpointed(checkpointed, layer, tokens, text_features, positions, text_attention)
    return tokens


@dataclass
class DecoderPass:
    """Per-layer decoder results; T = Q, or 2Q with the one-to-many copy appended after the Q originals."""

    #: (num_layers, B, T, d) query states after the decoder's output LayerNorm
    query_states: Tensor
    #: (num_layers, B, T, 4) cxcywh box each layer refines; gradients flow into the previous layer's box
    reference_boxes: Tensor
    #: (num_layers, B, 1) presence logits, unclamped
    presence_logits: Tensor


def _decoder_layer(
    layer: nn.Module,
    hidden: Tensor,
    query_pos: Tensor,
    text: Tensor,
    text_attention: Tensor | None,
    memory: Tensor,
    memory_pos: Tensor,
    image_bias: Tensor,
    num_self_attending: int,
) -> Tensor:
    """One HF ``Sam3DetrDecoderLayer`` (post-norm), with self-attention limited to the first
    ``num_self_attending`` tokens (the presence token and the one-to-one queries)."""
    pos = F.pad(query_pos, (0, 0, 1, 0))  # the presence token has no position
    n = num_self_attending
    attending = hidden[:, :n] + pos[:, :n]
    update, _ = layer.self_attn(query=attending, key=attending, value=hidden[:, :n])
    if n < hidden.shape[1]:
        update = torch.cat([update, torch.zeros_like(hidden[:, n:])], dim=1)
    hidden = layer.self_attn_layer_norm(hidden + layer.self_attn_dropout(update))

    update, _ = layer.text_cross_attn(query=hidden + pos, key=text, value=text, attention_mask=text_attention)
    hidden = layer.text_cross_attn_layer_norm(hidden + layer.text_cross_attn_dropout(update))

    update, _ = layer.vision_cross_attn(
        query=hidden + pos, key=memory + memory_pos, value=memory, attention_mask=image_bias
    )
    hidden = layer.vision_cross_attn_layer_norm(hidden + layer.vision_cross_attn_dropout(update))

    return layer.mlp_layer_norm(hidden + layer.mlp_dropout(layer.mlp(hidden)))


def _decoder_step(
    decoder: nn.Module,
    layer: nn.Module,
    hidden: Tensor,
    boxes: Tensor,
    grid: tuple[int, int],
    text: Tensor,
    text_attention: Tensor | None,
    memory: Tensor,
    memory_pos: Tensor,
    num_self_attending: int,
) -> Tensor:
    """Box-conditioned query positions, the box relative-position bias, then the layer. Kept together
    so checkpointing also drops the (B, heads, T, H*W) bias."""
    query_pos = decoder.ref_point_head(decoder.position_encoding.encode_boxes(boxes))
    image_bias = F.pad(decoder._get_rpb_matrix(boxes, grid), (0, 0, 1, 0))
    return _decoder_layer(
        layer, hidden, query_pos, text, text_attention, memory, memory_pos, image_bias, num_self_attending
    )


def run_detr_decoder(
    decoder: nn.Module,
    memory: Tensor,
    memory_pos: Tensor,
    grid: tuple[int, int],
    text_features: Tensor,
    text_mask: Tensor,
    one_to_many: bool,
    checkpointed: bool,
) -> DecoderPass:
    """Decode queries against the encoded image tokens.

    memory, memory_pos: (B, H*W, d) with ``grid = (H, W)``; text_features (B, L, d); text_mask (B, L) bool.
    """
    batch = memory.shape[0]
    queries = decoder.query_embed.weight
    box_logits = decoder.reference_points.weight
    if one_to_many:
        queries = queries.repeat(2, 1)
        box_logits = box_logits.repeat(2, 1)
    queries = queries.unsqueeze(0).expand(batch, -1, -1)
    boxes = box_logits.unsqueeze(0).expand(batch, -1, -1).sigmoid()
    presence = decoder.presence_token.weight.unsqueeze(0).expand(batch, -1, -1)
    hidden = torch.cat([presence, queries], dim=1)
    num_self_attending = 1 + decoder.config.num_queries

    text_attention = create_bidirectional_mask(
        config=decoder.config,
        inputs_embeds=hidden,
        attention_mask=text_mask,
        encoder_hidden_states=text_features,
    )
    states, references, presence_logits = [], [boxes], []
    for layer in decoder.layers:
        hidden = run_maybe_checkpointed(
            checkpointed,
            _decoder_step,
            decoder,
            layer,
            hidden,
            boxes,
            grid,
            text_features,
            text_attention,
            memory,
            memory_pos,
            num_self_attending,
        )
        normed = decoder.output_layer_norm(hidden[:, 1:])
        refined = (decoder.box_head(normed) + inverse_sigmoid(boxes)).sigmoid()
        boxes = refined.detach()  # the next layer refines a box it cannot change
        states.append(normed)
        references.append(refined)
        presence_logits.append(decoder.presence_head(decoder.presence_layer_norm(hidden[:, :1])).squeeze(-1))
    return DecoderPass(
        query_states=torch.stack(states),
        reference_boxes=torch.stack(references[:-1]),
        presence_logits=torch.stack(presence_logits),
    )
