"""AdamW parameter groups of the official SAM 3 fine-tuning recipe.

Each trainable parameter gets a base learning rate from the component it belongs to (DETR
encoder/decoder, mask decoder and heads: ``lr_transformer``; vision backbone: ``lr_vision``; text
encoder: ``lr_text``; LoRA adapter weights: ``lora_lr``), scaled inside the ViT trunk by a layer-wise
decay, and a weight decay that is 0 for biases and normalisation-layer parameters.

Layer-wise decay (BEiT style, as the official ``layer_decay_param_modifier`` applied to the ViT
trunk): with ``N`` ViT blocks, a parameter at depth ``d`` gets ``decay ** (N + 1 - d)``, where the
stem (patch embedding, pre-block norm) is depth 0 and block ``k`` (0-based) is depth ``k + 1``; so
the last block gets ``decay``, the first ``decay ** N`` and the stem ``decay ** (N + 1)``. Vision
parameters without a depth (position embedding, FPN neck) keep scale 1, as in the recipe.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from sam3tune.config import ConfigError
from sam3tune.model.components import component_of, is_adapter_parameter, vit_depth
from sam3tune.model.quantization import require_bitsandbytes
from sam3tune.train.config import OptimConfig

Component = Literal["transformer", "vision", "text"]

_NORM_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase, nn.RMSNorm)


@dataclass(frozen=True)
class ParamRole:
    """Where a parameter sits in the recipe.

    ``component``: which base learning rate it gets. ``vit_depth``: its depth in the ViT trunk for
    layer-wise decay (0 = stem, k + 1 = block k; None = no decay). ``is_adapter``: a LoRA adapter
    weight (gets ``lora_lr`` / ``lora_weight_decay`` and no layer decay).
    """

    component: Component
    vit_depth: int | None = None
    is_adapter: bool = False


def role_of(name: str) -> ParamRole:
    """The recipe role of a ``Sam3ForTraining`` parameter: vision (ViT + FPN neck) and text (CLIP +
    projection) get their own learning rates, everything else (DETR encoder/decoder, mask decoder,
    geometry encoder, heads) ``lr_transformer``; ViT-trunk parameters get their depth for layer decay
    (``sam3tune.model.components.vit_depth``); LoRA adapter weights are marked."""
    component = component_of(name)
    family = component if component in ("vision", "text") else "transformer"
    return ParamRole(family, vit_depth=vit_depth(name), is_adapter=is_adapter_parameter(name))


def no_weight_decay_names(model: nn.Module) -> set[str]:
    """Names of the parameters excluded from weight decay: every bias and every parameter of a
    normalisation layer (LayerNorm, GroupNorm, BatchNorm, RMSNorm)."""
    names = {name for name, _ in model.named_parameters() if name.rsplit(".", 1)[-1] == "bias"}
    for module_name, module in model.named_modules():
        if isinstance(module, _NORM_TYPES):
            prefix = f"{module_name}." if module_name else ""
            names.update(prefix + name for name, _ in module.named_parameters(recurse=False))
    return names


def layer_decay_scale(vit_depth: int | None, num_vit_blocks: int, decay: float) -> float:
    """The lr scale of a ViT-trunk parameter at ``vit_depth`` (None: not decayed, scale 1)."""
    if vit_depth is None:
        return 1.0
    if not 0 <= vit_depth <= num_vit_blocks:
        raise ValueError(f"ViT depth {vit_depth} outside 0..{num_vit_blocks} (stem, then one per block)")
    return decay ** (num_vit_blocks + 1 - vit_depth)


def build_param_groups(
    named_parameters: Iterable[tuple[str, nn.Parameter]],
    role_of: Callable[[str], ParamRole],
    no_decay: set[str],
    config: OptimConfig,
    num_vit_blocks: int,
) -> list[dict]:
    """Group the trainable parameters by (base lr, weight decay).

    Returns AdamW param-group dicts with ``params``, ``lr`` = ``base_lr`` (the unscheduled lr),
    ``weight_decay`` and a readable ``name`` (e.g. ``vision.block31``, ``transformer.no_wd``), in a
    deterministic order (the order in which each group's first parameter appears), so an optimizer
    state saved by one process loads into another.
    """
    base_lr = {"transformer": config.lr_transformer, "vision": config.lr_vision, "text": config.lr_text}
    groups: dict[str, dict] = {}
    for name, param in named_parameters:
        if not param.requires_grad:
            continue
        role = role_of(name)
        decays = name not in no_decay
        if role.is_adapter:
            key = "lora"
            lr, weight_decay = config.lora_lr, config.lora_weight_decay
        else:
            scale = layer_decay_scale(role.vit_depth, num_vit_blocks, config.vision_layer_decay)
            key = role.component + _depth_label(role.vit_depth)
            lr, weight_decay = base_lr[role.component] * scale, config.weight_decay
        if not decays:
            key, weight_decay = key + ".no_wd", 0.0
        group = groups.setdefault(
            key, {"name": key, "params": [], "lr": lr, "base_lr": lr, "weight_decay": weight_decay}
        )
        group["params"].append(param)
    if not groups:
        raise ConfigError(
            "no trainable parameter: every parameter is frozen (model.finetune), there is nothing to train"
        )
    return list(groups.values())


def _depth_label(vit_depth: int | None) -> str:
    if vit_depth is None:
        return ""
    return ".stem" if vit_depth == 0 else f".block{vit_depth - 1:02d}"


def build_optimizer(
    model: nn.Module, role_of: Callable[[str], ParamRole], num_vit_blocks: int, config: OptimConfig
) -> torch.optim.Optimizer:
    """The trainer's optimizer (``config.optimizer``) over :func:`build_param_groups` of ``model``."""
    groups = build_param_groups(
        model.named_parameters(), role_of, no_weight_decay_names(model), config, num_vit_blocks
    )
    return make_optimizer(groups, config)


def make_optimizer(groups: list[dict], config: OptimConfig) -> torch.optim.Optimizer:
    """AdamW (the recipe) or bitsandbytes' 8-bit AdamW (``config.optimizer``: its two moments take 2
    bytes per trained parameter instead of 8; ``sam3tune[qlora]``) over ``groups``, with ``config``'s betas
    and eps."""
    kwargs = {"betas": tuple(config.betas), "eps": config.eps, "lr": config.lr_transformer}
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, **kwargs)
    if config.optimizer == "adamw8bit":
        return require_bitsandbytes("optim.optimizer=adamw8bit").optim.AdamW8bit(groups, **kwargs)
    raise ValueError(f"optim.optimizer must be 'adamw' or 'adamw8bit', got {config.optimizer!r}")
