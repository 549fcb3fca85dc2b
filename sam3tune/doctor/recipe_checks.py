"""Settings against Meta's official recipe, and what actually trains: loss settings that differ,
components that are all frozen or got no LoRA adapter, parameters that got no gradient."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from sam3tune.config import to_dict
from sam3tune.data import DataConfig
from sam3tune.doctor.flags import Flag, make_flag
from sam3tune.eval.config import RetentionConfig
from sam3tune.loss import CriterionConfig
from sam3tune.model import FinetuneConfig, parameter_table
from sam3tune.model.finetune import lora_target_matches, lora_targets


def differences(config: Any, recipe: Any, prefix: str) -> list[str]:
    """``"prefix.key: value (recipe: default)"`` for every (nested) field of dataclass ``config`` that
    differs from ``recipe``."""

    def flat(data: Any, key: str) -> dict[str, Any]:
        if isinstance(data, Mapping):
            return {k: v for name, value in data.items() for k, v in flat(value, f"{key}.{name}").items()}
        return {key: data}

    mine, official = flat(to_dict(config), prefix), flat(to_dict(recipe), prefix)
    return [
        f"{key}: {mine[key]!r} (recipe: {official[key]!r})" for key in mine if mine[key] != official.get(key)
    ]


def loss_config_flags(config: CriterionConfig) -> list[Flag]:
    """``weights_differ_from_recipe`` listing every loss setting that is not the recipe's."""
    changed = differences(config, CriterionConfig(), "loss")
    if not changed:
        return []
    return [
        make_flag(
            "weights_differ_from_recipe",
            f"{len(changed)} loss setting(s) differ from the recipe: {'; '.join(changed[:3])}"
            + (" ..." if len(changed) > 3 else ""),
            details=changed,
        )
    ]


def negatives_flags(negative_queries: int, data: DataConfig, retention: RetentionConfig) -> list[Flag]:
    """``no_negatives``: the training split asks no negative query per epoch (``data.negatives``, one
    category, every image holding every category) and ``retention`` names no untuned prompt."""
    if negative_queries > 0 or retention.enabled:
        return []
    why = (
        f"data.negatives={data.negatives}"
        if data.negatives in ("none", 0)
        else "no image lacks a category (one category, or every image holds every one)"
    )
    return [make_flag("no_negatives", f"0 negative queries per epoch ({why}) and retention.prompts is empty")]


def lora_flags(base_model: nn.Module, finetune: FinetuneConfig) -> list[Flag]:
    """Before LoRA is applied: ``lora_component_without_adapters`` for each selected component whose target
    pattern matches no layer of ``base_model`` (a plain ``Sam3Model``)."""
    if finetune.mode != "lora":
        return []
    matches = lora_target_matches(base_model, finetune.lora)
    patterns = lora_targets(finetune.lora)
    return [
        make_flag(
            "lora_component_without_adapters",
            f"LoRA component {c!r}: its pattern {patterns[c]!r} matches no layer of this model",
        )
        for c in sorted(matches)
        if matches[c] == 0
    ]


def parameter_flags(model: nn.Module, finetune: FinetuneConfig) -> list[Flag]:
    """After the model is built: ``all_parameters_frozen``; in LoRA mode, selected components that ended
    up with no adapter parameters."""
    rows = {row.component: row for row in parameter_table(model)}
    flags = []
    if rows["all"].trainable == 0:
        flags.append(
            make_flag(
                "all_parameters_frozen",
                f"0 of {rows['all'].total:,} parameters are trainable (finetune.mode={finetune.mode}, "
                f"freeze={finetune.freeze})",
            )
        )
    if finetune.mode == "lora":
        flags.extend(
            make_flag("lora_component_without_adapters", f"LoRA component {c!r} has 0 adapter parameters")
            for c in sorted(set(finetune.lora.components))
            if c in rows and rows[c].adapters == 0
        )
    return flags


def no_gradient_flags(no_gradient: Mapping[str, list[str]]) -> list[Flag]:
    """``trainable_without_gradient`` when a step left trainable parameters without a gradient."""
    if not no_gradient:
        return []
    count = sum(len(names) for names in no_gradient.values())
    per_component = ", ".join(f"{c}: {len(names)}" for c, names in sorted(no_gradient.items()))
    details = [name for names in no_gradient.values() for name in names]
    return [
        make_flag(
            "trainable_without_gradient",
            f"{count} trainable parameter tensors got no gradient ({per_component})",
            details=details,
        )
    ]
