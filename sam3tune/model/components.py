"""Which component of SAM 3 a parameter belongs to, its ViT depth, and the trainable-parameter table.

Parameter names may carry any wrapper prefix (``module.`` from DDP, ``sam3.`` from ``Sam3ForTraining``,
``base_model.model.`` from ``peft``) and peft's infixes (``base_layer``, ``lora_A.default``,
``modules_to_save.default``): the component is decided by the path below ``Sam3Model``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from torch import nn

from sam3tune.model.config import COMPONENTS

# Top-level children of Sam3Model -> component. The heads live inside the DETR decoder (box and presence
# MLPs) or at top level (dot-product scoring); see _HEADS_IN_DECODER.
_TOP_LEVEL = {
    "vision_encoder": "vision",
    "text_encoder": "text",
    "text_projection": "text",
    "geometry_encoder": "geometry",
    "detr_encoder": "detr_encoder",
    "detr_decoder": "detr_decoder",
    "mask_decoder": "mask_decoder",
    "dot_product_scoring": "heads",
}
_HEADS_IN_DECODER = ("box_head", "presence_head")
_VIT_BLOCK = re.compile(r"^vision_encoder\.backbone\.layers\.(\d+)\.")
_VIT_STEM = ("vision_encoder.backbone.embeddings.", "vision_encoder.backbone.layer_norm.")
_PEFT_INFIXES = re.compile(
    r"\.(base_layer|original_module|modules_to_save\.[^.]+|lora_[A-Za-z_]+\.[^.]+)(?=\.)"
)


def model_path(name: str) -> str:
    """``name`` relative to ``Sam3Model`` with wrapper prefixes and peft infixes removed.

    ``module.sam3.base_model.model.detr_decoder.layers.0.self_attn.q_proj.lora_A.default.weight``
    -> ``detr_decoder.layers.0.self_attn.q_proj.weight``.
    """
    parts = name.split(".")
    for i, part in enumerate(parts):
        if part in _TOP_LEVEL:
            return _PEFT_INFIXES.sub("", ".".join(parts[i:]))
    raise KeyError(f"parameter {name!r} is not inside a Sam3Model (no known top-level module in its path)")


def component_of(name: str) -> str:
    """The component (one of ``COMPONENTS``) of parameter ``name``."""
    path = model_path(name)
    top, _, rest = path.partition(".")
    if top == "detr_decoder" and rest.split(".", 1)[0] in _HEADS_IN_DECODER:
        return "heads"
    return _TOP_LEVEL[top]


def vit_depth(name: str) -> int | None:
    """Depth of parameter ``name`` in the ViT trunk for layer-wise learning-rate decay (the official
    BEiT-style ids): 0 for the stem (patch embedding, pre-block norm), ``k + 1`` for block ``k``; ``None``
    elsewhere, i.e. no decay: the position embedding (the recipe's ``*pos_embed*`` override), the FPN neck
    and every other component."""
    path = model_path(name)
    match = _VIT_BLOCK.match(path)
    if match:
        return int(match.group(1)) + 1
    if path.startswith(_VIT_STEM) and not path.endswith("position_embeddings"):
        return 0
    return None


def is_adapter_parameter(name: str) -> bool:
    """True for LoRA adapter weights added by peft."""
    return ".lora_" in name


def _is_base_copy(name: str) -> bool:
    # peft keeps the untouched original of a fully trained module next to its trainable copy
    return ".original_module." in name


@dataclass(frozen=True)
class ComponentParameters:
    """Parameter counts of one component (``total`` = base model weights, without adapters)."""

    component: str
    total: int
    adapters: int
    trainable: int


def parameter_table(model: nn.Module) -> list[ComponentParameters]:
    """Per-component counts for ``model`` (a ``Sam3Model``, a peft model or a ``Sam3ForTraining``).

    A module trained fully under LoRA exists twice in peft (frozen original + trainable copy); only the
    copy is counted, so ``total`` matches the plain ``Sam3Model``. The last row, ``all``, sums the rest.
    """
    counts = {c: [0, 0, 0] for c in COMPONENTS}
    for name, param in model.named_parameters():
        if _is_base_copy(name):
            continue
        row = counts[component_of(name)]
        n = param.numel()
        row[1 if is_adapter_parameter(name) else 0] += n
        if param.requires_grad:
            row[2] += n
    rows = [ComponentParameters(c, *counts[c]) for c in COMPONENTS]
    rows.append(
        ComponentParameters(
            "all", *(sum(getattr(r, f) for r in rows) for f in ("total", "adapters", "trainable"))
        )
    )
    return rows


def format_parameter_table(rows: list[ComponentParameters]) -> str:
    """A fixed-width text table of :func:`parameter_table` rows."""
    lines = [f"{'component':<14}{'total':>14}{'adapters':>12}{'trainable':>14}{'trainable %':>13}"]
    for r in rows:
        share = 100.0 * r.trainable / max(r.total + r.adapters, 1)
        lines.append(f"{r.component:<14}{r.total:>14,}{r.adapters:>12,}{r.trainable:>14,}{share:>12.2f}%")
    return "\n".join(lines)
