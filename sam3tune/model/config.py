"""Model and fine-tuning configs (plain dataclasses; defaults = official SAM 3 training recipe).

Pure data with no torch import, so ``sam3tune.train`` can embed :class:`ModelConfig` in its run config.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from sam3tune.config import require, require_range

Component = Literal["vision", "text", "geometry", "detr_encoder", "detr_decoder", "mask_decoder", "heads"]

#: Every parameter of ``Sam3Model`` belongs to exactly one of these (see ``sam3tune.model.components``).
COMPONENTS: tuple[str, ...] = (
    "vision",
    "text",
    "geometry",
    "detr_encoder",
    "detr_decoder",
    "mask_decoder",
    "heads",
)


@dataclass
class LoraConfig:
    """LoRA adapters (through ``peft``) on the Linear layers of the chosen components.

    ``target_modules`` overrides, per component, the regex (full match on module names relative to
    ``Sam3Model``) that selects the Linear layers to adapt; see ``sam3tune.model.finetune.LORA_TARGETS``.
    ``peft`` applies one dropout to every adapter, so ``dropout`` is global; rank and alpha may differ
    per component.
    """

    components: list[Component] = field(
        default_factory=lambda: ["vision", "detr_encoder", "detr_decoder", "mask_decoder"]
    )
    rank: int = 16
    alpha: float = 32.0
    dropout: float = 0.05
    rank_per_component: dict[str, int] = field(default_factory=dict)
    alpha_per_component: dict[str, float] = field(default_factory=dict)
    target_modules: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        require_range(self, "rank", low=1)
        require_range(self, "alpha", low=0, low_open=True)
        require_range(self, "dropout", low=0, high=1, high_open=True)
        for name in ("rank_per_component", "alpha_per_component", "target_modules"):
            for component, value in getattr(self, name).items():
                key = f"{name}.{component}"
                require(
                    component in COMPONENTS, key, value, f"{component!r} is not one of {list(COMPONENTS)}"
                )
                if name == "target_modules":
                    require(_compiles(value), key, value, "must be a valid regular expression")
                else:
                    require(
                        isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0,
                        key,
                        value,
                        "must be a positive number",
                    )


@dataclass
class FinetuneConfig:
    """Which parameters train.

    ``full``: every component trains except those in ``freeze``.
    ``lora``: base weights are frozen; ``lora.components`` get adapters; the prediction heads (box,
    presence, scoring) train fully unless ``heads`` is in ``freeze`` or in ``lora.components``.
    """

    mode: Literal["full", "lora"] = "full"
    freeze: list[Component] = field(default_factory=list)
    lora: LoraConfig = field(default_factory=LoraConfig)


@dataclass
class ModelConfig:
    """What to load and how to train it.

    ``name``: ``facebook/sam3`` (or another hub id), a local ``save_pretrained`` directory, or a named
    small architecture (``tiny``, ``small``; see ``sam3tune.model.architectures``).
    ``detr_dropout``: dropout of the DETR encoder/decoder (after each attention and MLP block and inside
    the MLP), the geometry encoder and the scoring prompt MLP; official training uses 0.1.
    ``one_to_many``: the DAC branch (queries duplicated, duplicates skip self-attention) in training.
    ``allow_missing_weights``: train even if the checkpoint lacked some weights (never do this by accident:
    a silently random model is Meta sam3 issue #606).
    ``frozen_dtype``: storage of the weights that do not train (base weights under LoRA, frozen
    components): ``float32``, ``bfloat16`` (half the bytes; needs bf16 autocast, which casts them anyway),
    or ``auto`` = ``bfloat16`` when the run trains under bf16 autocast, else ``float32``.
    ``quantization``: ``nf4`` stores the frozen Linear weights of the base in 4-bit NormalFloat through
    bitsandbytes (QLoRA; LoRA mode only; ``pip install sam3tune[qlora]``).
    ``prompt_token``: whether text-only queries carry the geometry encoder's CLS token: ``meta`` (as Meta's
    SAM 3 and the released weights), ``hf`` (as plain ``Sam3Model.forward``), or ``auto`` = the mode the
    model's folder records, ``meta`` when it records none (``sam3tune.model.prompt_token``). The trained
    model's folder records the mode it was trained in.
    """

    name: str = "facebook/sam3"
    detr_dropout: float = 0.1
    one_to_many: bool = True
    activation_checkpointing: bool = False
    allow_missing_weights: bool = False
    frozen_dtype: Literal["float32", "bfloat16", "auto"] = "float32"
    quantization: Literal["none", "nf4"] = "none"
    prompt_token: Literal["auto", "meta", "hf"] = "auto"
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        require(bool(self.name.strip()), "name", self.name, "must name an architecture, a folder or a hub id")
        require_range(self, "detr_dropout", low=0, high=1, high_open=True)
        require(
            self.prompt_token in ("auto", "meta", "hf"),
            "prompt_token",
            self.prompt_token,
            "must be auto, meta or hf",
        )


def _compiles(pattern: object) -> bool:
    try:
        re.compile(str(pattern))
    except re.error:
        return False
    return isinstance(pattern, str)
