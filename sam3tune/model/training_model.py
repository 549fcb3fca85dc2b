"""``Sam3ForTraining``: the forward the SAM 3 loss needs, on top of HF ``Sam3Model``.

One call returns final-layer predictions, every earlier decoder layer's predictions (``aux_outputs``) and,
in training, the one-to-many (DAC) branch; see ``docs/architecture.md`` ("Model outputs"). Each unique
image is encoded once and its features indexed for every query (prompt) on it. Queries may carry
exemplar boxes, which HF's geometry encoder turns into prompt tokens appended to the text tokens.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import NamedTuple

import torch
from peft import PeftModel
from torch import Tensor, nn
from transformers import Sam3Model

from sam3tune.config import ConfigError
from sam3tune.model.checkpointing import run_maybe_checkpointed, set_encoder_checkpointing
from sam3tune.model.components import ComponentParameters, format_parameter_table, parameter_table
from sam3tune.model.config import ModelConfig
from sam3tune.model.detr import inverse_sigmoid, run_detr_decoder, run_detr_encoder
from sam3tune.model.dropout import set_detr_dropout
from sam3tune.model.export import save_merged
from sam3tune.model.finetune import apply_finetuning, trains_heads
from sam3tune.model.loading import ModelBundle, WeightsNotLoadedError
from sam3tune.model.quantization import cast_frozen, quantize_frozen_linears
from sam3tune.model.roi_align import install_roi_align
from sam3tune.model.tokenizer import Tokenizer

log = logging.getLogger(__name__)


def _predict_masks(
    mask_decoder: nn.Module, queries: Tensor, memory: Tensor, text: Tensor, text_mask: Tensor, *levels: Tensor
) -> tuple[Tensor, Tensor]:
    """Instance mask logits (B, Q, h, w) and the semantic head's logits (B, 1, h, w)."""
    decoded = mask_decoder(
        decoder_queries=queries,
        backbone_features=list(levels),
        encoder_hidden_states=memory,
        prompt_features=text,
        prompt_mask=text_mask,
    )
    return decoded.pred_masks, decoded.semantic_seg


class ImageFeatures(NamedTuple):
    """What the image encoder gives the decoder, per unique image: the FPN ``levels`` SAM 3 uses, finest
    first ((I, d, 4H, 4W), (I, d, 2H, 2W), (I, d, H, W) for an H x W patch grid), and the sine
    ``positions`` (I, d, H, W) of the coarsest of them."""

    levels: tuple[Tensor, ...]
    positions: Tensor


def _trains(module: nn.Module) -> bool:
    return any(p.requires_grad for p in module.parameters())


class Sam3ForTraining(nn.Module):
    """Training/eval forward of a ``Sam3Model`` (plain or wrapped by peft for LoRA).

    A plain ``nn.Module``: wrap it in DDP as is. All parameters live under ``self.sam3``.
    """

    def __init__(
        self,
        sam3: Sam3Model | PeftModel,
        tokenizer: Tokenizer,
        *,
        one_to_many: bool = True,
        activation_checkpointing: bool = False,
    ):
        super().__init__()
        install_roi_align()  # the geometry encoder needs torchvision's roi_align, absent on CPU installs
        self.sam3 = sam3
        self.tokenizer = tokenizer
        self.one_to_many = one_to_many
        self.activation_checkpointing = activation_checkpointing

    @property
    def activation_checkpointing(self) -> bool:
        return self._activation_checkpointing

    @activation_checkpointing.setter
    def activation_checkpointing(self, enabled: bool) -> None:
        self._activation_checkpointing = enabled
        set_encoder_checkpointing(self.core, enabled)

    @property
    def core(self) -> Sam3Model:
        """The ``Sam3Model`` itself (inside peft's wrapper in LoRA mode)."""
        return self.sam3.get_base_model() if isinstance(self.sam3, PeftModel) else self.sam3

    @property
    def image_size(self) -> int:
        return int(self.core.config.image_size)

    @property
    def num_queries(self) -> int:
        return int(self.core.config.detr_decoder_config.num_queries)

    @property
    def num_vit_blocks(self) -> int:
        """Number of ViT blocks (for layer-wise learning-rate decay, see ``sam3tune.train.param_groups``)."""
        return int(self.core.config.vision_config.backbone_config.num_hidden_layers)

    def parameter_table(self) -> list[ComponentParameters]:
        """Per-component total / adapter / trainable parameter counts (last row: ``all``)."""
        return parameter_table(self.sam3)

    def format_parameter_table(self) -> str:
        return format_parameter_table(self.parameter_table())

    def forward(
        self,
        pixel_values: Tensor,
        image_index: Tensor,
        input_ids: Tensor,
        attention_mask: Tensor,
        exemplar_boxes: Tensor | None = None,
        exemplar_labels: Tensor | None = None,
    ) -> dict:
        """Predict every query (one prompt on one image).

        pixel_values (I, 3, S, S): the unique images, normalised with mean = std = 0.5;
        image_index (B,) int64: the image row of each query; input_ids, attention_mask (B, L) int64;
        exemplar_boxes (B, K, 4) cxcywh in [0, 1] and exemplar_labels (B, K) int64 (1 positive, 0 negative,
        -1 padding; each row's boxes first): box prompts, given to HF's geometry encoder. A query whose row
        is all padding is predicted from its text alone, exactly as without exemplars.

        Returns (Q learned queries, d decoder layers): ``pred_logits`` (B, Q), ``pred_boxes`` (B, Q, 4)
        cxcywh in [0, 1], ``presence_logits`` (B, 1) unclamped, ``pred_masks`` (B, Q, 4S/p, 4S/p) mask
        logits (p = patch size); ``aux_outputs``: d - 1 dicts (earliest layer first) with the same keys
        but no masks; ``semantic_seg`` (B, 1, 4S/p, 4S/p) the semantic head's logits (one map per query,
        the union of the prompted concept). In training with ``one_to_many``: ``pred_logits_o2m`` /
        ``pred_boxes_o2m`` in every dict and ``pred_masks_o2m`` in the top one. Logits, boxes and presence
        are float32; masks keep the compute dtype (they are large).
        """
        self._check_inputs(pixel_values, image_index, input_ids, attention_mask)
        _check_exemplars(exemplar_boxes, exemplar_labels, input_ids.shape[0])
        images = self.encode_images(pixel_values)
        text = self.encode_text(input_ids, attention_mask)
        return self.decode(images, image_index, text, attention_mask, exemplar_boxes, exemplar_labels)

    def encode_images(self, pixel_values: Tensor) -> ImageFeatures:
        """The ViT + FPN pass over the unique images (I, 3, S, S); no per-query work."""
        sam3 = self.core
        with torch.set_grad_enabled(torch.is_grad_enabled() and _trains(sam3.vision_encoder)):
            vision = sam3.vision_encoder(pixel_values)
        # SAM 3 drops the coarsest FPN level
        return ImageFeatures(tuple(vision.fpn_hidden_states[:-1]), vision.fpn_position_encoding[-2])

    def encode_text(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Prompt token features (B, L, d) after the text projection; padding is masked downstream."""
        sam3 = self.core
        with torch.set_grad_enabled(
            torch.is_grad_enabled() and (_trains(sam3.text_encoder) or _trains(sam3.text_projection))
        ):
            return sam3.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output

    def decode(
        self,
        images: ImageFeatures,
        image_index: Tensor,
        text: Tensor,
        attention_mask: Tensor,
        exemplar_boxes: Tensor | None = None,
        exemplar_labels: Tensor | None = None,
    ) -> dict:
        """DETR encoder + decoder, scoring and masks for every query: each query takes the features of its
        image row ``image_index`` (B,), its prompt's ``text`` (B, L, d) with ``attention_mask`` (B, L) and,
        if given, its exemplar boxes (geometry encoder). Returns the dict of :meth:`forward`."""
        sam3 = self.core
        checkpointed = self.activation_checkpointing and self.training
        one_to_many = self.one_to_many and self.training
        levels = [f.index_select(0, image_index) for f in images.levels]
        positions = images.positions.index_select(0, image_index)
        text_mask = attention_mask.bool()
        if exemplar_boxes is not None and exemplar_boxes.shape[1] > 0:
            text, text_mask = _append_exemplars(
                sam3.geometry_encoder, text, text_mask, exemplar_boxes, exemplar_labels, levels, positions
            )

        memory = run_detr_encoder(sam3.detr_encoder, levels[-1], positions, text, text_mask, checkpointed)
        memory_pos = positions.flatten(2).transpose(1, 2)
        grid = tuple(levels[-1].shape[-2:])
        decoded = run_detr_decoder(
            sam3.detr_decoder, memory, memory_pos, grid, text, text_mask, one_to_many, checkpointed
        )

        offsets = sam3.detr_decoder.box_head(decoded.query_states)
        boxes = (inverse_sigmoid(decoded.reference_boxes) + offsets).sigmoid()
        logits = sam3.dot_product_scoring(
            decoder_hidden_states=decoded.query_states, text_features=text, text_mask=text_mask
        ).squeeze(-1)
        masks, semantic = run_maybe_checkpointed(
            checkpointed,
            _predict_masks,
            sam3.mask_decoder,
            decoded.query_states[-1],
            memory,
            text,
            text_mask,
            *levels,
        )
        outputs = _outputs(
            logits.float(),
            boxes.float(),
            decoded.presence_logits.float(),
            masks,
            self.num_queries,
            one_to_many,
        )
        outputs["semantic_seg"] = semantic
        return outputs

    def _check_inputs(
        self, pixel_values: Tensor, image_index: Tensor, input_ids: Tensor, attention_mask: Tensor
    ) -> None:
        size = self.image_size
        if (
            pixel_values.dim() != 4
            or pixel_values.shape[1] != 3
            or tuple(pixel_values.shape[-2:]) != (size, size)
        ):
            raise ValueError(
                f"pixel_values must be (I, 3, {size}, {size}) for this model, got {tuple(pixel_values.shape)}"
            )
        if input_ids.dim() != 2 or input_ids.shape != attention_mask.shape:
            raise ValueError(
                f"input_ids and attention_mask must both be (B, L), got {tuple(input_ids.shape)} "
                f"and {tuple(attention_mask.shape)}"
            )
        if image_index.dim() != 1 or image_index.shape[0] != input_ids.shape[0]:
            raise ValueError(
                f"image_index must be (B,) with B = {input_ids.shape[0]} queries, "
                f"got {tuple(image_index.shape)}"
            )
        if image_index.dtype != torch.int64:
            raise ValueError(f"image_index must be int64, got {image_index.dtype}")
        if image_index.numel() and (
            int(image_index.min()) < 0 or int(image_index.max()) >= pixel_values.shape[0]
        ):
            raise ValueError(
                f"image_index values must lie in [0, {pixel_values.shape[0]}) (rows of pixel_values), "
                f"got min {int(image_index.min())} max {int(image_index.max())}"
            )

    def save_pretrained(self, directory: str | Path) -> None:
        """Write a plain ``transformers`` checkpoint (LoRA merged) plus the tokenizer, atomically; see
        ``export.save_merged``."""
        save_merged(self, directory)


def _check_exemplars(boxes: Tensor | None, labels: Tensor | None, num_queries: int) -> None:
    if (boxes is None) != (labels is None):
        raise ValueError("exemplar_boxes and exemplar_labels must be given together")
    if boxes is None:
        return
    if boxes.dim() != 3 or boxes.shape[0] != num_queries or boxes.shape[2] != 4:
        raise ValueError(f"exemplar_boxes must be (B={num_queries}, K, 4) cxcywh, got {tuple(boxes.shape)}")
    if labels.shape != boxes.shape[:2]:
        raise ValueError(
            f"exemplar_labels must be (B, K) = {tuple(boxes.shape[:2])}, got {tuple(labels.shape)}"
        )


def _append_exemplars(
    geometry_encoder: nn.Module,
    text: Tensor,
    text_mask: Tensor,
    boxes: Tensor,
    labels: Tensor,
    levels: list[Tensor],
    positions: Tensor,
) -> tuple[Tensor, Tensor]:
    """Prompt tokens = text tokens + the geometry encoder's tokens of each query's exemplars (as
    ``Sam3Model.forward`` builds them); queries without an exemplar get no geometry token at all (HF adds
    its CLS token only when there are boxes), so they equal a text-only forward."""
    valid = labels >= 0
    geometry = geometry_encoder(
        box_embeddings=boxes.to(levels[-1].dtype),
        box_mask=valid,
        box_labels=labels.clamp(min=0),
        img_feats=levels,
        img_pos_embeds=[positions],
    )
    geometry_mask = geometry.attention_mask & valid.any(dim=1, keepdim=True)
    prompt = torch.cat([text, geometry.last_hidden_state.to(text.dtype)], dim=1)
    return prompt, torch.cat([text_mask, geometry_mask], dim=1)


def _outputs(
    logits: Tensor, boxes: Tensor, presence: Tensor, masks: Tensor, num_queries: int, one_to_many: bool
) -> dict:
    """Split per-layer tensors (layers first) into the loss's output dict."""
    q = num_queries

    def layer(i: int) -> dict:
        out = {"pred_logits": logits[i, :, :q], "pred_boxes": boxes[i, :, :q], "presence_logits": presence[i]}
        if one_to_many:
            out["pred_logits_o2m"] = logits[i, :, q:]
            out["pred_boxes_o2m"] = boxes[i, :, q:]
        return out

    outputs = layer(-1)
    outputs["pred_masks"] = masks[:, :q]
    if one_to_many:
        outputs["pred_masks_o2m"] = masks[:, q:]
    outputs["aux_outputs"] = [layer(i) for i in range(logits.shape[0] - 1)]
    return outputs


def frozen_dtype(config: ModelConfig, bf16_autocast: bool) -> torch.dtype:
    """The storage dtype of frozen weights: ``config.frozen_dtype``, ``auto`` resolved by the precision of
    the training forward (bfloat16 under bf16 autocast, else float32)."""
    if config.frozen_dtype == "auto":
        return torch.bfloat16 if bf16_autocast else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[config.frozen_dtype]


def build_training_model(
    bundle: ModelBundle, config: ModelConfig, exemplars: bool = False, *, bf16_autocast: bool = False
) -> Sam3ForTraining:
    """Prepare ``bundle.model`` for training as ``config`` says: dropout, NF4 quantisation of the base
    (``quantization``), fine-tuning mode (freezing / LoRA), frozen weights' dtype, activation
    checkpointing; logs the per-component parameter table. ``exemplars``: the data has exemplar
    (box-prompt) queries, so the geometry encoder trains like the other components (else it stays
    frozen). ``bf16_autocast``: the forward will run under bf16 autocast (resolves ``frozen_dtype: auto``;
    bfloat16 frozen weights need it). Refuses a model whose weights did not load (unless
    ``config.allow_missing_weights``), the geometry encoder's included when ``exemplars``. The bundle's
    model is modified in place."""
    missing_geometry = [k for k in bundle.report.missing if k.startswith("geometry_encoder.")]
    if (
        not bundle.report.weights_loaded or (exemplars and missing_geometry)
    ) and not config.allow_missing_weights:
        raise WeightsNotLoadedError(
            f"{bundle.report.summary()}\nRefusing to fine-tune a partly random model"
            + (" (exemplar training uses the geometry encoder)" if exemplars and missing_geometry else "")
            + "; set model.allow_missing_weights=true only if this is intended."
        )
    set_detr_dropout(bundle.model, config.detr_dropout)
    dtype = frozen_dtype(config, bf16_autocast)
    if config.quantization == "nf4":
        if config.finetune.mode != "lora":
            raise ConfigError(
                "model.quantization=nf4 quantises the frozen base weights: it needs finetune.mode=lora"
            )
        count = quantize_frozen_linears(
            bundle.model, train_heads=trains_heads(config.finetune), compute_dtype=dtype
        )
        log.info("quantised %d Linear layers of the base to 4-bit NF4 (bitsandbytes)", count)
    elif config.quantization != "none":
        raise ConfigError(f"model.quantization must be 'none' or 'nf4', got {config.quantization!r}")
    sam3 = apply_finetuning(bundle.model, config.finetune, exemplars=exemplars)
    if dtype != torch.float32:
        cast_frozen(sam3, dtype)
    model = Sam3ForTraining(
        sam3,
        bundle.tokenize,
        one_to_many=config.one_to_many,
        activation_checkpointing=config.activation_checkpointing,
    )
    log.info("parameters (finetune.mode=%s):\n%s", config.finetune.mode, model.format_parameter_table())
    return model
