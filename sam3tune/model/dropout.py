"""Training dropout of SAM 3's DETR-style parts, set to the official recipe.

Official training uses p = 0.1 after every attention and MLP block of the DETR encoder/decoder and the
geometry encoder, between the two layers of their MLPs, and in the scoring prompt MLP. HF Sam3 defaults
the in-MLP dropout to 0 (``hidden_dropout``) and places it before the ReLU, which is equivalent (dropout
only zeroes and rescales by a positive factor, so it commutes with ReLU). HF's scoring prompt MLP applies
its dropout to the MLP output rather than after the hidden ReLU; it is set to the same p.

Not reproduced, because HF Sam3 has no such operation: dropout on the attention probabilities (official
0.1 in the DETR attention; HF passes 0) and ViT drop-path (official rate 0.1 rising linearly over blocks).
"""

from __future__ import annotations

from torch import nn
from transformers import Sam3Model


def set_detr_dropout(model: Sam3Model, p: float) -> None:
    """Set every DETR-style dropout of ``model`` (modules and config, so ``save_pretrained`` keeps it)."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {p}")
    config = model.config
    for sub in (config.detr_encoder_config, config.detr_decoder_config, config.geometry_encoder_config):
        sub.dropout = p
        sub.hidden_dropout = p
    for part in (model.detr_encoder, model.detr_decoder, model.geometry_encoder, model.dot_product_scoring):
        for module in part.modules():
            if isinstance(module, nn.Dropout):
                module.p = p
