"""Fine-tuning modes: full training, frozen components, LoRA adapters per component (``peft``).

Parameters that training never reaches are always frozen (see :func:`unreachable_prefixes`; the geometry
encoder unless the data has exemplar queries), so every trainable parameter receives a gradient and DDP
needs no ``find_unused_parameters``.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from peft import LoraConfig as PeftLoraConfig
from peft import PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer
from torch import nn
from transformers import Sam3Model

from sam3tune.config import ConfigError
from sam3tune.model.components import component_of, model_path
from sam3tune.model.config import COMPONENTS, FinetuneConfig, LoraConfig

#: Linear layers adapted per component: a regex that must fully match the module name inside Sam3Model.
LORA_TARGETS: dict[str, str] = {
    "vision": r"vision_encoder\.backbone\.layers\.\d+\.(attention\.[qkvo]_proj|mlp\.fc[12])",
    "text": (
        r"text_encoder\.text_model\.encoder\.layers\.\d+\.(self_attn\.(q|k|v|out)_proj|mlp\.fc[12])"
        r"|text_projection"
    ),
    "detr_encoder": r"detr_encoder\.layers\.\d+\.((self_attn|cross_attn)\.[qkvo]_proj|mlp\.fc[12])",
    "detr_decoder": (
        r"detr_decoder\.layers\.\d+\.((self_attn|text_cross_attn|vision_cross_attn)\.[qkvo]_proj|mlp\.fc[12])"
    ),
    "mask_decoder": r"mask_decoder\.(prompt_cross_attn\.[qkvo]_proj|mask_embedder\.layers\.\d+)",
    "geometry": (
        r"geometry_encoder\.(layers\.\d+\.((self_attn|cross_attn)\.[qkvo]_proj|mlp\.fc[12])"
        r"|boxes_direct_project|boxes_pos_enc_project|final_proj)"
    ),
    "heads": (
        r"detr_decoder\.(box_head|presence_head)\.layer\d"
        r"|dot_product_scoring\.(text_mlp\.layer\d|text_proj|query_proj)"
    ),
}

#: Modules of the ``heads`` component, trained in full next to LoRA adapters.
HEAD_MODULES: tuple[str, ...] = ("box_head", "presence_head", "dot_product_scoring")


@contextmanager
def quiet_peft() -> Iterator[None]:
    """Silence the deprecation warning peft 0.21 triggers in transformers 5 on every wrap."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def unreachable_prefixes(model: Sam3Model, exemplars: bool = False) -> list[str]:
    """Parameter-name prefixes (inside ``Sam3Model``) that the training forward never uses.

    The coarsest FPN level (HF computes it, SAM 3 drops it), CLIP's own text projection (SAM 3 projects
    with ``Sam3Model.text_projection``), the geometry (box-prompt) encoder unless ``exemplars`` (text
    prompts never run it), the semantic-segmentation projection (no semantic loss in the official recipe)
    and pixel-decoder stages beyond the FPN levels.
    """
    config = model.config
    levels = len(config.vision_config.scale_factors)
    prefixes = [
        f"vision_encoder.neck.fpn_layers.{levels - 1}.",
        "text_encoder.text_projection.",
        "mask_decoder.semantic_projection.",
    ]
    if not exemplars:
        prefixes.append("geometry_encoder.")
    used_stages = levels - 2  # the pixel decoder upsamples between the levels it gets (levels - 1 of them)
    for stage in range(used_stages, config.mask_decoder_config.num_upsampling_stages):
        prefixes += [
            f"mask_decoder.pixel_decoder.conv_layers.{stage}.",
            f"mask_decoder.pixel_decoder.norms.{stage}.",
        ]
    return prefixes


def freeze_unreachable(model: nn.Module, core: Sam3Model, exemplars: bool = False) -> None:
    prefixes = tuple(unreachable_prefixes(core, exemplars))
    for name, param in model.named_parameters():
        if model_path(name).startswith(prefixes):
            param.requires_grad_(False)


def _check_components(names: list[str], where: str) -> set[str]:
    unknown = sorted(set(names) - set(COMPONENTS))
    if unknown:
        raise ConfigError(f"{where}: unknown component(s) {unknown}; valid: {list(COMPONENTS)}")
    return set(names)


def apply_finetuning(model: Sam3Model, config: FinetuneConfig, exemplars: bool = False) -> nn.Module:
    """Set what trains; returns ``model`` (full mode) or a ``peft.PeftModel`` wrapping it (LoRA mode).

    ``exemplars``: the data has exemplar queries, so the geometry encoder is used and trains like any other
    component (else it is frozen). Raises ``ConfigError`` (a ``ValueError``) for an unknown component, a
    component both frozen and adapted, LoRA on the geometry encoder without exemplars (never run, so its
    adapters would train nothing), or a selected LoRA component whose target regex matched no Linear layer.
    """
    frozen = _check_components(config.freeze, "finetune.freeze")
    if config.mode == "full":
        for name, param in model.named_parameters():
            param.requires_grad_(component_of(name) not in frozen)
        freeze_unreachable(model, model, exemplars)
        return model
    if config.mode != "lora":
        raise ConfigError(f"finetune.mode must be 'full' or 'lora', got {config.mode!r}")
    return _apply_lora(model, config, frozen, exemplars)


def _apply_lora(model: Sam3Model, config: FinetuneConfig, frozen: set[str], exemplars: bool) -> PeftModel:
    lora = config.lora
    adapted = _check_components(lora.components, "finetune.lora.components")
    _check_components(list(lora.target_modules), "finetune.lora.target_modules")
    if not adapted:
        raise ConfigError("finetune.mode=lora needs at least one component in finetune.lora.components")
    if adapted & frozen:
        raise ConfigError(f"component(s) {sorted(adapted & frozen)} are both frozen and LoRA-adapted")
    if "geometry" in adapted and not exemplars:
        raise ConfigError(
            "LoRA on 'geometry' would train nothing: the geometry (box-prompt) encoder is not used by "
            "text-prompt training (turn on data.exemplars to train it)"
        )
    for c in set(lora.rank_per_component) | set(lora.alpha_per_component):
        if c not in adapted:
            raise ConfigError(f"finetune.lora: rank/alpha given for {c!r}, which is not in lora.components")
    targets = lora_targets(lora)
    train_heads = trains_heads(config)
    peft_config = PeftLoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        bias="none",
        target_modules="|".join(f"(?:{pattern})" for pattern in targets.values()),
        rank_pattern={f"(?:{targets[c]})": r for c, r in lora.rank_per_component.items()},
        alpha_pattern={f"(?:{targets[c]})": a for c, a in lora.alpha_per_component.items()},
        modules_to_save=list(HEAD_MODULES) if train_heads else None,
    )
    try:
        with quiet_peft():
            peft_model = get_peft_model(model, peft_config)
    except ValueError as err:  # peft refuses when no module matched at all
        raise ConfigError(
            f"finetune.lora: the LoRA targets matched no layer ({err}); targets: {targets}"
        ) from err
    freeze_unreachable(peft_model, model, exemplars)
    counts = adapter_counts(peft_model)
    empty = [c for c in sorted(adapted) if counts.get(c, 0) == 0]
    if empty:
        raise ConfigError(
            f"finetune.lora: component(s) {empty} received no LoRA adapter: their target regex "
            f"{[targets[c] for c in empty]} matched no Linear layer of this model"
        )
    return peft_model


def trains_heads(config: FinetuneConfig) -> bool:
    """Whether the heads train in full next to LoRA adapters (neither frozen nor adapted themselves)."""
    return "heads" not in config.freeze and "heads" not in config.lora.components


def lora_targets(lora: LoraConfig) -> dict[str, str]:
    """Component -> regex of its layers that get adapters (``lora.target_modules``, else ``LORA_TARGETS``),
    for the known components in ``lora.components``."""
    return {
        c: lora.target_modules.get(c, LORA_TARGETS[c])
        for c in sorted(set(lora.components))
        if c in LORA_TARGETS
    }


def lora_target_matches(model: Sam3Model, lora: LoraConfig) -> dict[str, int]:
    """How many layers of ``model`` (a plain ``Sam3Model``) each component of ``lora.components`` would
    adapt; 0 means the component would receive no adapter (``apply_finetuning`` refuses that)."""
    adaptable = (nn.Linear, nn.Embedding, nn.Conv1d, nn.Conv2d, nn.Conv3d)
    names = [name for name, module in model.named_modules() if isinstance(module, adaptable)]
    return {
        component: sum(re.fullmatch(pattern, name) is not None for name in names)
        for component, pattern in lora_targets(lora).items()
    }


def adapter_counts(model: nn.Module) -> dict[str, int]:
    """How many layers of each component carry a LoRA adapter."""
    counts: dict[str, int] = {}
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer):
            component = component_of(name + ".weight")
            counts[component] = counts.get(component, 0) + 1
    return counts
