"""Named SAM 3 architectures, built from random weights without any download.

Each entry of :data:`NAMED_ARCHITECTURES` is a small architecture as plain data (same modules as the
real model, fewer and narrower layers): add or adjust one to change what ``load_model("<name>")``
builds. They are for tests and the CPU demo and use the offline hashing tokenizer
(``sam3tune.model.tokenizer``).

:data:`SAM3_RANDOM` (``"sam3-random"``) is the released SAM 3 architecture itself (``Sam3Config()``
defaults, 840M parameters, 1008 px) with random, untrained weights and SAM 3's CLIP tokenizer: for
measuring speed and memory and for testing the full-size path without the gated download.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import nn
from transformers import Sam3Config, Sam3Model

from sam3tune.config import require, require_range


@dataclass(frozen=True)
class ArchitectureSpec:
    """A scaled-down ``Sam3Config``.

    The image side ``image_size`` must be a multiple of ``patch_size``; the patch grid is
    ``image_size / patch_size`` and masks come out at 4x the grid. ``detr_hidden_size`` must be a multiple
    of 8 (GroupNorm in the mask decoder); every head dimension ViT-side must be a multiple of 4 (2-D RoPE).
    """

    image_size: int
    patch_size: int
    pretrain_image_size: int
    vit_hidden_size: int
    vit_intermediate_size: int
    vit_layers: int
    vit_heads: int
    vit_window_size: int
    vit_global_attn_indexes: tuple[int, ...]
    text_vocab_size: int
    text_hidden_size: int
    text_intermediate_size: int
    text_layers: int
    text_heads: int
    text_max_length: int
    detr_hidden_size: int
    detr_heads: int
    detr_intermediate_size: int
    detr_encoder_layers: int
    detr_decoder_layers: int
    num_queries: int
    geometry_layers: int = 1
    #: Initialise the DETR encoder/decoder as Meta's code does (xavier; N(0, 1) queries and reference
    #: points; zero last box-head layer) instead of HF's N(0, 0.02). Matters only from scratch.
    official_init: bool = True

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """The invariants above, each refused with its key (instead of a shape error deep in torch)."""
        sizes = [f.name for f in fields(self) if f.type in (int, "int")]
        require_range(self, *sizes, low=1)
        require(
            self.image_size % self.patch_size == 0,
            "image_size",
            self.image_size,
            "must be a multiple of patch_size",
        )
        for prefix in ("vit", "text", "detr"):
            hidden, heads = getattr(self, f"{prefix}_hidden_size"), getattr(self, f"{prefix}_heads")
            require(
                hidden % heads == 0, f"{prefix}_hidden_size", hidden, f"must be a multiple of {prefix}_heads"
            )
        vit_head = self.vit_hidden_size // self.vit_heads
        require(
            vit_head % 4 == 0,
            "vit_hidden_size",
            self.vit_hidden_size,
            "/ vit_heads must be a multiple of 4 (2-D RoPE)",
        )
        require(
            self.detr_hidden_size % 8 == 0,
            "detr_hidden_size",
            self.detr_hidden_size,
            "must be a multiple of 8",
        )
        require(
            all(0 <= i < self.vit_layers for i in self.vit_global_attn_indexes),
            "vit_global_attn_indexes",
            self.vit_global_attn_indexes,
            "must be layer indexes in [0, vit_layers)",
        )


NAMED_ARCHITECTURES: dict[str, ArchitectureSpec] = {
    # Unit tests: ~0.1M parameters, 64 px, a forward+backward in well under a second on one CPU core.
    "tiny": ArchitectureSpec(
        image_size=64,
        patch_size=8,
        pretrain_image_size=32,
        vit_hidden_size=32,
        vit_intermediate_size=64,
        vit_layers=2,
        vit_heads=2,
        vit_window_size=4,
        vit_global_attn_indexes=(1,),
        text_vocab_size=512,
        text_hidden_size=16,
        text_intermediate_size=32,
        text_layers=1,
        text_heads=2,
        text_max_length=16,
        detr_hidden_size=16,
        detr_heads=2,
        detr_intermediate_size=32,
        detr_encoder_layers=1,
        detr_decoder_layers=2,
        num_queries=6,
    ),
    # CPU demo: ~1.6M parameters, 128 px (hf-sam3-notes section 11).
    "small": ArchitectureSpec(
        image_size=128,
        patch_size=16,
        pretrain_image_size=64,
        vit_hidden_size=96,
        vit_intermediate_size=384,
        vit_layers=3,
        vit_heads=4,
        vit_window_size=4,
        vit_global_attn_indexes=(2,),
        text_vocab_size=1024,
        text_hidden_size=64,
        text_intermediate_size=256,
        text_layers=1,
        text_heads=2,
        text_max_length=16,
        detr_hidden_size=64,
        detr_heads=4,
        detr_intermediate_size=256,
        detr_encoder_layers=2,
        detr_decoder_layers=3,
        num_queries=30,
    ),
    # `sam3tune demo`: 1.3M parameters, 64 px, global attention in both ViT layers, 10 queries; its
    # pretrained weights ship in sam3tune/demo/base (made by scripts/pretrain_demo_base.py, docs/demo.md).
    "demo": ArchitectureSpec(
        image_size=64,
        patch_size=8,
        pretrain_image_size=64,
        vit_hidden_size=64,
        vit_intermediate_size=256,
        vit_layers=2,
        vit_heads=4,
        vit_window_size=8,
        vit_global_attn_indexes=(0, 1),
        text_vocab_size=1024,
        text_hidden_size=64,
        text_intermediate_size=256,
        text_layers=1,
        text_heads=4,
        text_max_length=8,
        detr_hidden_size=64,
        detr_heads=4,
        detr_intermediate_size=256,
        detr_encoder_layers=2,
        detr_decoder_layers=3,
        num_queries=10,
    ),
}


SAM3_RANDOM = "sam3-random"


def architecture_names() -> list[str]:
    """Every name ``load_model`` builds from random weights."""
    return [*sorted(NAMED_ARCHITECTURES), SAM3_RANDOM]


def build_sam3_random(seed: int = 0) -> Sam3Model:
    """The released SAM 3 architecture (``Sam3Config()`` defaults) with random weights; RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Sam3Model(Sam3Config())


def sam3_config(spec: ArchitectureSpec) -> Sam3Config:
    """The ``Sam3Config`` of a named architecture (token ids follow the hashing tokenizer's layout)."""
    from sam3tune.model.tokenizer import HashingTokenizer

    if spec.image_size % spec.patch_size:
        raise ValueError(f"image_size {spec.image_size} is not a multiple of patch_size {spec.patch_size}")
    tokens = HashingTokenizer(vocab_size=spec.text_vocab_size, max_length=spec.text_max_length)
    detr = {
        "hidden_size": spec.detr_hidden_size,
        "num_attention_heads": spec.detr_heads,
        "intermediate_size": spec.detr_intermediate_size,
    }
    return Sam3Config(
        vision_config={
            "backbone_config": {
                "model_type": "sam3_vit_model",
                "hidden_size": spec.vit_hidden_size,
                "intermediate_size": spec.vit_intermediate_size,
                "num_hidden_layers": spec.vit_layers,
                "num_attention_heads": spec.vit_heads,
                "image_size": spec.image_size,
                "patch_size": spec.patch_size,
                "pretrain_image_size": spec.pretrain_image_size,
                "window_size": spec.vit_window_size,
                "global_attn_indexes": list(spec.vit_global_attn_indexes),
            },
            "fpn_hidden_size": spec.detr_hidden_size,
        },
        text_config={
            "vocab_size": spec.text_vocab_size,
            "hidden_size": spec.text_hidden_size,
            "intermediate_size": spec.text_intermediate_size,
            "num_hidden_layers": spec.text_layers,
            "num_attention_heads": spec.text_heads,
            "max_position_embeddings": spec.text_max_length,
            "projection_dim": spec.text_hidden_size,
            "hidden_act": "gelu",
            "pad_token_id": tokens.pad_id,
            "bos_token_id": tokens.bos_id,
            "eos_token_id": tokens.eos_id,
        },
        geometry_encoder_config={**detr, "num_layers": spec.geometry_layers},
        detr_encoder_config={**detr, "num_layers": spec.detr_encoder_layers},
        detr_decoder_config={
            **detr,
            "num_layers": spec.detr_decoder_layers,
            "num_queries": spec.num_queries,
        },
        mask_decoder_config={"hidden_size": spec.detr_hidden_size, "num_attention_heads": spec.detr_heads},
    )


def build_named_model(spec: ArchitectureSpec, seed: int = 0) -> Sam3Model:
    """A randomly initialised ``Sam3Model`` of ``spec``; the global RNG state is left untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Sam3Model(sam3_config(spec))
        if spec.official_init:
            init_detr_like_official(model)
    return model


@torch.no_grad()
def init_detr_like_official(model: Sam3Model) -> None:
    """Re-initialise the DETR encoder/decoder the way Meta's SAM 3 builds them.

    Every matrix gets xavier-uniform, except the query embeddings and reference points (standard
    normal) and the box head, whose last layer starts at zero so the first boxes equal the references.
    """
    for part in (model.detr_encoder, model.detr_decoder):
        for name, param in part.named_parameters():
            if "query_embed" in name or "reference_points" in name:
                nn.init.normal_(param)
            elif param.dim() > 1 and "box_head" not in name:
                nn.init.xavier_uniform_(param)
    last = model.detr_decoder.box_head.layer3
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
