"""Checkpoints written by Meta's SAM 3 code -> a Hugging Face ``Sam3Model`` folder.

Meta's builder and trainer save the image model ``Sam3Image`` as a state dict: ``sam3.pt`` on the hub
(keys under ``detector.``, next to the video tracker's ``tracker.*``), trainer checkpoints
(``{"model": state_dict, "optimizer": ...}``), and DDP-wrapped ones (``module.``). :func:`meta_state_dict`
unwraps all of these; :func:`convert_state_dict` renames every key to its ``Sam3Model`` name.

The renaming follows both models' module trees (the transformers wheel ships no SAM 3 conversion script):

* fused projections are split: the ViT's ``attn.qkv`` and every ``nn.MultiheadAttention.in_proj_*``
  become ``q_proj`` / ``k_proj`` / ``v_proj`` (thirds, in that order);
* the ViT position embedding drops its class-token row (577 -> 576 positions; the ViT has no class
  token), and CLIP's ``text_projection`` (stored ``x @ W``) is transposed into a Linear weight;
* the DETR decoder's norms are named by the block they follow (``norm1`` after image cross-attention,
  ``norm2`` after self-attention, ``catext_norm`` after text cross-attention, ``norm3`` after the MLP);
  encoder-style layers' ``norm1/2/3`` precede self-attention / cross-attention / MLP in both;
* two kinds of Meta tensors have no ``Sam3Model`` counterpart and are left out, by name: the ViT's
  rotary ``freqs_cis`` tables (buffers ``Sam3Model`` recomputes) and the point-prompt projections of
  the geometry encoder (``Sam3Model`` takes text and box prompts only).

Any other key without a rule is an error naming it, so a checkpoint of a different layout cannot
silently lose weights.
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from torch import Tensor

from sam3tune.atomic import atomic_directory
from sam3tune.errors import UserError
from sam3tune.model.export import MODEL_FILES
from sam3tune.model.hub import ModelSpecError
from sam3tune.model.tokenizer import TOKENIZER_FILES
from sam3tune.output_files import claim_whole_folder, writing

log = logging.getLogger(__name__)

#: Meta's ViT builds its LayerNorms with eps 1e-5 (``sam3/model/vitdet.py``); HF's ``Sam3ViTConfig``
#: defaults to 1e-6. Imported checkpoints get Meta's value: at full size with imported weights the FPN
#: levels then agree with Meta's within 1.6e-5 instead of 4e-4 (docs/model.md, "Meta parity").
META_VIT_LAYER_NORM_EPS = 1e-5

#: (pattern, replacement): the first that matches a Meta key (after :func:`meta_state_dict`) renames it;
#: then every rule of _WITHIN_BLOCKS applies. ``layer<i>`` becomes ``layer{i + 1}``; ``{q,k,v}`` marks a
#: fused projection split into three.
_VIT = r"backbone\.vision_backbone\.trunk\."
_NECK = r"backbone\.vision_backbone\.convs\.(\d+)\."
_TEXT = r"backbone\.language_backbone\.encoder\."
_TEXT_LAYER = _TEXT + r"transformer\.resblocks\.(\d+)\."
_DEC = r"transformer\.decoder\."
_DEC_LAYER = _DEC + r"layers\.(\d+)\."
_SEG = r"segmentation_head\."
RULES: list[tuple[str, str]] = [
    # ViT
    (_VIT + r"pos_embed$", "vision_encoder.backbone.embeddings.position_embeddings"),
    (_VIT + r"patch_embed\.proj\.", "vision_encoder.backbone.embeddings.patch_embeddings.projection."),
    (_VIT + r"ln_pre\.", "vision_encoder.backbone.layer_norm."),
    (_VIT + r"blocks\.(\d+)\.norm1\.", r"vision_encoder.backbone.layers.\1.layer_norm1."),
    (_VIT + r"blocks\.(\d+)\.norm2\.", r"vision_encoder.backbone.layers.\1.layer_norm2."),
    (_VIT + r"blocks\.(\d+)\.attn\.qkv\.", r"vision_encoder.backbone.layers.\1.attention.{q,k,v}_proj."),
    (_VIT + r"blocks\.(\d+)\.attn\.proj\.", r"vision_encoder.backbone.layers.\1.attention.o_proj."),
    (_VIT + r"blocks\.(\d+)\.mlp\.", r"vision_encoder.backbone.layers.\1.mlp."),
    # FPN neck: 4x = deconv, GELU, deconv; 2x = deconv; then a 1x1 and a 3x3 conv per level
    (_NECK + r"dconv_2x2_0\.", r"vision_encoder.neck.fpn_layers.\1.scale_layers.0."),
    (_NECK + r"dconv_2x2_1\.", r"vision_encoder.neck.fpn_layers.\1.scale_layers.2."),
    (_NECK + r"dconv_2x2\.", r"vision_encoder.neck.fpn_layers.\1.scale_layers.0."),
    (_NECK + r"conv_1x1\.", r"vision_encoder.neck.fpn_layers.\1.proj1."),
    (_NECK + r"conv_3x3\.", r"vision_encoder.neck.fpn_layers.\1.proj2."),
    # CLIP text encoder and the 1024 -> 256 resizer
    (_TEXT + r"token_embedding\.", "text_encoder.text_model.embeddings.token_embedding."),
    (_TEXT + r"positional_embedding$", "text_encoder.text_model.embeddings.position_embedding.weight"),
    (_TEXT + r"ln_final\.", "text_encoder.text_model.final_layer_norm."),
    (_TEXT + r"text_projection$", "text_encoder.text_projection.weight"),
    (_TEXT_LAYER + r"attn\.", r"text_encoder.text_model.encoder.layers.\1.self_attn."),
    (_TEXT_LAYER + r"ln_1\.", r"text_encoder.text_model.encoder.layers.\1.layer_norm1."),
    (_TEXT_LAYER + r"ln_2\.", r"text_encoder.text_model.encoder.layers.\1.layer_norm2."),
    (_TEXT_LAYER + r"mlp\.c_fc\.", r"text_encoder.text_model.encoder.layers.\1.mlp.fc1."),
    (_TEXT_LAYER + r"mlp\.c_proj\.", r"text_encoder.text_model.encoder.layers.\1.mlp.fc2."),
    (r"backbone\.language_backbone\.resizer\.", "text_projection."),
    # geometry encoder (box prompts)
    (r"geometry_encoder\.img_pre_norm\.", "geometry_encoder.vision_layer_norm."),
    (r"geometry_encoder\.norm\.", "geometry_encoder.prompt_layer_norm."),
    (r"geometry_encoder\.encode_norm\.", "geometry_encoder.output_layer_norm."),
    (r"geometry_encoder\.encode\.", "geometry_encoder.layers."),
    (r"geometry_encoder\.", "geometry_encoder."),  # the rest keeps its name
    (r"transformer\.encoder\.", "detr_encoder."),
    # DETR decoder
    (_DEC_LAYER + r"cross_attn\.", r"detr_decoder.layers.\1.vision_cross_attn."),
    (_DEC_LAYER + r"ca_text\.", r"detr_decoder.layers.\1.text_cross_attn."),
    (_DEC_LAYER + r"norm1\.", r"detr_decoder.layers.\1.vision_cross_attn_layer_norm."),
    (_DEC_LAYER + r"catext_norm\.", r"detr_decoder.layers.\1.text_cross_attn_layer_norm."),
    (_DEC_LAYER + r"norm2\.", r"detr_decoder.layers.\1.self_attn_layer_norm."),
    (_DEC_LAYER + r"norm3\.", r"detr_decoder.layers.\1.mlp_layer_norm."),
    (_DEC_LAYER + r"linear1\.", r"detr_decoder.layers.\1.mlp.fc1."),
    (_DEC_LAYER + r"linear2\.", r"detr_decoder.layers.\1.mlp.fc2."),
    (_DEC_LAYER + r"self_attn\.", r"detr_decoder.layers.\1.self_attn."),
    (_DEC + r"norm\.", "detr_decoder.output_layer_norm."),
    (_DEC + r"bbox_embed\.layers\.(\d+)\.", r"detr_decoder.box_head.layer<\1>."),
    (_DEC + r"presence_token_head\.layers\.(\d+)\.", r"detr_decoder.presence_head.layer<\1>."),
    (_DEC + r"presence_token_out_norm\.", "detr_decoder.presence_layer_norm."),
    (_DEC + r"ref_point_head\.layers\.(\d+)\.", r"detr_decoder.ref_point_head.layer<\1>."),
    (_DEC + r"boxRPB_embed_(x|y)\.layers\.(\d+)\.", r"detr_decoder.box_rpb_embed_\1.layer<\2>."),
    (_DEC + r"(query_embed|reference_points|presence_token)\.", r"detr_decoder.\1."),
    # mask decoder (segmentation head)
    (_SEG + r"pixel_decoder\.", "mask_decoder.pixel_decoder."),
    (_SEG + r"mask_predictor\.mask_embed\.", "mask_decoder.mask_embedder."),
    (_SEG + r"cross_attend_prompt\.", "mask_decoder.prompt_cross_attn."),
    (_SEG + r"cross_attn_norm\.", "mask_decoder.prompt_cross_attn_norm."),
    (_SEG + r"semantic_seg_head\.", "mask_decoder.semantic_projection."),
    (_SEG + r"instance_seg_head\.", "mask_decoder.instance_projection."),
    # dot-product scoring
    (r"dot_prod_scoring\.prompt_mlp\.layers\.(\d+)\.", r"dot_product_scoring.text_mlp.layer<\1>."),
    (r"dot_prod_scoring\.prompt_mlp\.out_norm\.", "dot_product_scoring.text_mlp_out_norm."),
    (r"dot_prod_scoring\.prompt_proj\.", "dot_product_scoring.text_proj."),
    (r"dot_prod_scoring\.hs_proj\.", "dot_product_scoring.query_proj."),
]
#: Meta tensors with no Sam3Model counterpart, and why
DROPPED: list[tuple[str, str]] = [
    (r"\.attn\.freqs_cis$", "rotary tables of the ViT (a buffer Sam3Model recomputes)"),
    (r"^geometry_encoder\.points_", "point-prompt projection (Sam3Model takes text and box prompts only)"),
    (r"\.sam2_convs\.", "the video tracker's copy of the FPN neck (not part of the image model)"),
]
_PREFIXES = ("module.", "detector.")


class MetaCheckpointError(UserError, ValueError):
    """A checkpoint that is not a Meta SAM 3 image-model state dict, or one that does not convert."""


def meta_state_dict(checkpoint: Mapping) -> dict[str, Tensor]:
    """The image model's state dict inside a Meta checkpoint: a ``model`` sub-dict is opened, ``module.``
    (DDP) and ``detector.`` (``sam3.pt``) prefixes are removed, the video tracker's keys are dropped."""
    if "model" in checkpoint and isinstance(checkpoint["model"], Mapping):
        checkpoint = checkpoint["model"]
    tensors = {k: v for k, v in checkpoint.items() if isinstance(v, Tensor)}
    if not tensors:
        shown = sorted(map(str, checkpoint))[:8]
        raise MetaCheckpointError(f"no tensors in the checkpoint (top-level keys: {shown})")
    odd = [k for k in tensors if not isinstance(k, str)]
    if odd:
        raise MetaCheckpointError(f"tensor names must be text, found {odd[:3]!r}: not a state dict")
    if any("detector." in k for k in tensors):  # sam3.pt: the image model is the video model's detector
        tensors = {k: v for k, v in tensors.items() if "detector." in k}
    out = {}
    for key, value in tensors.items():
        changed = True
        while changed:
            changed = False
            for prefix in _PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix) :], True
        if key.startswith(("tracker.", "sam2_predictor.", "inst_interactive_predictor.")):
            continue
        out[key] = value
    return out


#: names inside attention / MLP blocks (DETR encoder and geometry encoder layers are encoder-style)
_WITHIN_BLOCKS: list[tuple[str, str]] = [
    (r"\.cross_attn_image\.", ".cross_attn."),
    (r"\.in_proj_(weight|bias)$", r".{q,k,v}_proj.\1"),
    (r"^(?!text_encoder\.)(.*)\.out_proj\.", r"\1.o_proj."),
    (r"^(detr_encoder|geometry_encoder)(\.layers\.\d+)\.linear(\d)\.", r"\1\2.mlp.fc\3."),
    (r"^(detr_encoder|geometry_encoder)(\.layers\.\d+)\.norm(\d)\.", r"\1\2.layer_norm\3."),
]


def _rename(key: str) -> str | None:
    """The Sam3Model name of Meta's ``key`` (``{q,k,v}`` marks a split), or None without a rule."""
    for pattern, replacement in RULES:
        name, count = re.subn("^" + pattern, replacement, key, count=1)
        if count:
            break
    else:
        return None
    for pattern, replacement in _WITHIN_BLOCKS:
        name = re.sub(pattern, replacement, name)
    return re.sub(r"layer<(\d+)>", lambda m: f"layer{int(m.group(1)) + 1}", name)


def convert_state_dict(meta: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Meta ``Sam3Image`` keys -> ``Sam3Model`` keys. Returns (HF state dict, {dropped Meta key: why}); the
    values are views of ``meta``'s tensors (nothing is copied).

    Raises :class:`MetaCheckpointError` naming every key no rule covers, or two keys mapping to one.
    """
    out: dict[str, Tensor] = {}
    dropped: dict[str, str] = {}
    unknown: list[str] = []
    source: dict[str, str] = {}
    for key, value in meta.items():
        why = next((reason for pattern, reason in DROPPED if re.search(pattern, key)), None)
        if why is not None:
            dropped[key] = why
            continue
        name = _rename(key)
        if name is None:
            unknown.append(key)
            continue
        if name.endswith("position_embeddings"):
            if value.dim() != 3:
                raise MetaCheckpointError(f"{key}: shape {list(value.shape)}, expected (1, positions, width)")
            if value.shape[1] % 2 == 1:
                value = value[:, 1:]  # the class-token row (the ViT runs without a class token)
        if name == "text_encoder.text_projection.weight":
            if value.dim() != 2:
                raise MetaCheckpointError(f"{key}: shape {list(value.shape)}, expected a matrix")
            value = value.t()
        parts = {name: value}
        if "{q,k,v}" in name:
            if value.dim() == 0 or value.shape[0] % 3:
                raise MetaCheckpointError(
                    f"{key}: shape {list(value.shape)}, expected a fused q/k/v projection (first dimension "
                    "a multiple of 3)"
                )
            parts = dict(zip((name.replace("{q,k,v}", p) for p in "qkv"), value.chunk(3, dim=0), strict=True))
        for new, tensor in parts.items():
            if new in out:
                raise MetaCheckpointError(f"{key} and {source[new]} both map to {new}")
            out[new], source[new] = tensor, key  # views: nothing is copied before the shapes are checked
    if unknown:
        shown = ", ".join(unknown[:10]) + (f", ... ({len(unknown) - 10} more)" if len(unknown) > 10 else "")
        raise MetaCheckpointError(
            f"{len(unknown)} key(s) of the checkpoint have no Sam3Model counterpart: {shown}"
        )
    return out, dropped


def load_meta_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """Tensors of a Meta checkpoint file (``.pt`` via ``torch.load(weights_only=True)``, or safetensors)."""
    path = Path(path)
    if not path.is_file():
        raise MetaCheckpointError(f"no checkpoint file {path}", path=path)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:  # the header's offsets are checked against the file size before anything is read
            checkpoint = load_file(path)
        except (SafetensorError, OSError) as err:
            raise MetaCheckpointError(f"{path}: not a readable safetensors file ({err})") from err
    else:
        try:  # memory-mapped: each storage must fit its record in the file
            checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as err:  # a pickle with objects weights_only refuses, or not a torch file at all
            problem = f"{path}: not a loadable weights-only torch checkpoint ({err})"
            raise MetaCheckpointError(problem) from err
    if not isinstance(checkpoint, Mapping):
        raise MetaCheckpointError(f"{path}: expected a dict of tensors, got {type(checkpoint).__name__}")
    tensors = meta_state_dict(checkpoint)
    for key, tensor in tensors.items():
        _check_stored(path, key, tensor)
    return tensors


def _check_stored(path: Path, key: str, tensor: Tensor) -> None:
    """Refuse a tensor whose elements are not all in the file: a stride of 0 (an expanded view) or
    overlapping strides make a few stored bytes claim gigabytes, allocated at the first copy."""
    if tensor.is_sparse or tensor.layout != torch.strided or tensor.is_quantized:
        raise MetaCheckpointError(f"{path}: {key} is not a dense tensor ({tensor.layout})")
    claimed = tensor.numel() * tensor.element_size()
    stored = tensor.untyped_storage().nbytes()
    if claimed > stored:
        raise MetaCheckpointError(
            f"{path}: {key} claims {list(tensor.shape)} = {claimed:,} bytes but the file stores {stored:,} "
            "bytes for it (an expanded or overlapping tensor); not a checkpoint Meta's code writes"
        )


def import_checkpoint(
    path: str | Path, out: str | Path, *, config=None, overwrite: bool = False
) -> dict[str, str]:
    """Convert Meta checkpoint ``path`` into a ``save_pretrained`` folder ``out`` that
    ``Sam3Model.from_pretrained`` loads (with CLIP's BPE file on this machine, tokenizer files too).

    ``config`` is the ``Sam3Config`` (default: the released architecture); its ViT LayerNorm eps is set to
    Meta's (:data:`META_VIT_LAYER_NORM_EPS`; HF's default is 1e-6). Every ``Sam3Model`` weight must come
    from the checkpoint with its shape, or :class:`MetaCheckpointError` names the ones that do not. The
    folder records the ``meta`` prompt-token mode (Meta's forward). Returns the Meta keys that were left
    out and why. ``out`` is written atomically, claimed first
    (:func:`~sam3tune.output_files.claim_whole_folder`): new or empty, or, with ``overwrite``, an earlier
    imported model holding nothing else.
    """
    from transformers import Sam3Config, Sam3Model

    from sam3tune.model.clip_tokenizer import ClipTokenizer
    from sam3tune.model.prompt_token import set_prompt_token

    out = claim_whole_folder(out, MODEL_FILES + TOKENIZER_FILES, overwrite, "OUT", "import-checkpoint")
    with writing(out, "OUT"):
        out.parent.mkdir(parents=True, exist_ok=True)
    converted, dropped = convert_state_dict(load_meta_checkpoint(path))
    config = copy.deepcopy(config) if config is not None else Sam3Config()
    config.vision_config.backbone_config.layer_norm_eps = META_VIT_LAYER_NORM_EPS
    with torch.device("meta"):
        model = Sam3Model(config)
    set_prompt_token(model, "meta")
    expected = {k: v.shape for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(converted))
    extra = sorted(set(converted) - set(expected))
    wrong = sorted(k for k in set(expected) & set(converted) if converted[k].shape != expected[k])
    if missing or extra or wrong:
        problems = [
            f"{label}: {', '.join(keys[:6])}{' ...' if len(keys) > 6 else ''} ({len(keys)})"
            for label, keys in (("missing", missing), ("unexpected", extra), ("wrong shape", wrong))
            if keys
        ]
        raise MetaCheckpointError(f"{path} does not fill a Sam3Model: " + "; ".join(problems))
    converted = {k: v.contiguous() for k, v in converted.items()}  # shapes equal the config's: bounded
    model.load_state_dict(converted, strict=True, assign=True)
    with writing(out, "OUT", also=(SafetensorError,)), atomic_directory(out) as staging:
        model.save_pretrained(staging)
        try:
            ClipTokenizer.find_local(max_length=model.config.text_config.max_position_embeddings).save(
                staging
            )
        except ModelSpecError as err:
            log.warning("tokenizer files not written (%s); load_model will need them in %s", err, out)
    return dropped
