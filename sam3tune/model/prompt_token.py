"""The geometry encoder's prompt token on text-only queries: how Meta's SAM 3 runs, and how HF's does.

Meta's SAM 3 builds every prompt as its text tokens followed by the geometry encoder's tokens, and for a
text-only query the geometry prompt is empty, so the encoder still contributes one token: its learned CLS
embedding, projected, normalised and passed through its layers (self-attention, cross-attention to the
image, MLP), so it depends on the image. The released weights were trained with that token on every
query. HF's ``Sam3Model.forward`` runs the geometry encoder only when boxes are given, so its text-only
prompt lacks the token (at full size with imported weights the final logits then differ from Meta's by
0.07, more than their spread across queries; with it by 1e-6: ``docs/model.md``).

Two modes, recorded in the model's own ``config.json`` (key :data:`RECORD_KEY`) so that a model runs the
way it was trained wherever it is loaded:

* ``meta`` (the default): the token on every query, as Meta's model. Plain transformers gives the same
  outputs when passed one padding box: ``input_boxes=zeros(B, 1, 4)``,
  ``input_boxes_labels=full((B, 1), -10)``.
* ``hf``: no token for queries without exemplar boxes, as plain ``Sam3Model.forward``.

A folder without the record runs in ``meta`` mode: ``facebook/sam3`` and Meta checkpoints were trained
with the token. (Models fine-tuned by sam3tune before the mode existed were trained without it: record
``"sam3tune_prompt_token": "hf"`` in their ``config.json`` to run them as they were trained.)
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn
from transformers import Sam3Config, Sam3Model

PromptToken = Literal["meta", "hf"]
MODES: tuple[str, ...] = ("meta", "hf")
#: the key of ``config.json`` (an attribute of ``Sam3Config``) that records the mode
RECORD_KEY = "sam3tune_prompt_token"
#: the mode of a model whose folder does not record one
DEFAULT_MODE: PromptToken = "meta"


def recorded_prompt_token(config: Sam3Config) -> str | None:
    """The mode recorded in ``config`` (a ``Sam3Config``), or None when it records none."""
    return getattr(config, RECORD_KEY, None)


def prompt_token_of(model: Sam3Model) -> PromptToken:
    """The mode ``model`` runs in: its recorded one, else :data:`DEFAULT_MODE`."""
    mode = recorded_prompt_token(model.config)
    return DEFAULT_MODE if mode is None else check_mode(mode, f"{RECORD_KEY} of the model's config")


def set_prompt_token(model: Sam3Model, mode: str) -> None:
    """Record ``mode`` in ``model.config``: the forward follows it, and ``save_pretrained`` writes it."""
    setattr(model.config, RECORD_KEY, check_mode(mode, "prompt_token"))


def check_mode(mode: object, where: str) -> PromptToken:
    if mode not in MODES:
        raise ValueError(f"{where} must be one of {list(MODES)}, got {mode!r}")
    return mode  # type: ignore[return-value]


def geometry_prompt_token(geometry_encoder: nn.Module, features: Tensor, positions: Tensor) -> Tensor:
    """The geometry encoder's output for an empty geometry prompt: its CLS token alone, (I, 1, d), for
    each image's coarsest used FPN level ``features`` (I, d, H, W) with sine ``positions`` (I, d, H, W).

    Equals the CLS row of ``Sam3GeometryEncoder`` run on one padding box (the padding box is masked out
    of its self-attention, so the CLS token never sees it), without pooling that box (RoIAlign), so it
    also exports to ONNX. It depends on the image only, so it is computed once per image."""
    encoder = geometry_encoder
    token = encoder.cls_embed.weight  # (1, d)
    token = encoder.prompt_layer_norm(encoder.final_proj(token))
    hidden = token.unsqueeze(0).expand(features.shape[0], 1, token.shape[-1])
    image = features.flatten(2).transpose(1, 2)
    image_positions = positions.flatten(2).transpose(1, 2)
    for layer in encoder.layers:
        hidden = layer(
            prompt_feats=hidden, vision_feats=image, vision_pos_encoding=image_positions, prompt_mask=None
        )
    return encoder.output_layer_norm(hidden)
