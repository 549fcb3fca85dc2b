"""The memory ladder: four complete training setups from most to least GPU memory, the estimate of each
one's peak, the automatic choice for the GPU at hand and the step down after an early out-of-memory.

A rung is plain data: ``key=value`` overrides of :class:`~sam3tune.train.config.TrainConfig`, applied on
top of the run's config (``loop.memory=RUNG``, or picked by ``loop.memory=auto``):

- ``full``: the official recipe (every reachable parameter trains), activation checkpointing on;
- ``lora``: LoRA on ViT + DETR encoder/decoder + mask decoder, heads trained, frozen weights in bf16;
- ``lora-decoder``: ViT and text encoder frozen (run without a graph), LoRA on DETR encoder/decoder +
  mask decoder, heads trained, frozen weights in bf16;
- ``qlora-decoder``: ``lora-decoder`` with the frozen base in 4-bit NF4 (bitsandbytes, peft's k-bit
  preparation) and 8-bit AdamW.

The estimate of a rung's peak (bytes, one GPU) = weights + optimizer state, *counted* on the run's
architecture with the rung applied (built on the meta device, no memory), + the activation peak
(gradients included) *measured* by the doctor's meter on the full-size SAM 3 at 1008 px, 1 image with 4
prompts and masks (``bench/memory_ladder.py``, :data:`ACTIVATION_REFERENCE`), scaled by the pixel count
and by the step's images and queries. See docs/train.md ("Memory ladder").
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import torch
from torch import nn
from transformers import Sam3Config, Sam3Model

from sam3tune.config import ConfigError, apply_overrides, from_dict, to_dict
from sam3tune.data import QueryDataset
from sam3tune.data.queries import negative_count
from sam3tune.model.finetune import HEAD_MODULES, apply_finetuning, quiet_peft, trains_heads
from sam3tune.train.config import TrainConfig

log = logging.getLogger(__name__)

_SETUP = (
    "model.finetune.lora.target_modules={}",
    "model.finetune.lora.rank_per_component={}",
    "model.finetune.lora.alpha_per_component={}",
)
_DECODER = "model.finetune.lora.components=[detr_encoder, detr_decoder, mask_decoder]"

#: Rung name -> overrides, highest memory first (the order of the ladder).
RUNGS: dict[str, tuple[str, ...]] = {
    "full": (
        "model.finetune.mode=full",
        "model.finetune.freeze=[]",
        "model.activation_checkpointing=true",
        "model.frozen_dtype=auto",
        "model.quantization=none",
        "optim.optimizer=adamw",
    ),
    "lora": (
        "model.finetune.mode=lora",
        "model.finetune.freeze=[]",
        "model.finetune.lora.components=[vision, detr_encoder, detr_decoder, mask_decoder]",
        *_SETUP,
        "model.activation_checkpointing=true",
        "model.frozen_dtype=auto",
        "model.quantization=none",
        "optim.optimizer=adamw",
    ),
    "lora-decoder": (
        "model.finetune.mode=lora",
        "model.finetune.freeze=[vision, text]",
        _DECODER,
        *_SETUP,
        "model.activation_checkpointing=true",
        "model.frozen_dtype=auto",
        "model.quantization=none",
        "optim.optimizer=adamw",
    ),
    "qlora-decoder": (
        "model.finetune.mode=lora",
        "model.finetune.freeze=[vision, text]",
        _DECODER,
        *_SETUP,
        "model.activation_checkpointing=true",
        "model.frozen_dtype=auto",
        "model.quantization=nf4",
        "optim.optimizer=adamw8bit",
    ),
}
LADDER: tuple[str, ...] = tuple(RUNGS)

#: Activation peak (bytes; the gradients made during backward included) of each rung's training step:
#: full-size SAM 3 (``Sam3Config()``), 1008 px, 1 image x 4 prompts (2 positive with 3 masked objects
#: each), bf16 autocast, measured by the doctor's meter on the CPU (``python bench/memory_ladder.py``,
#: the rows' ``activations``; docs/train.md has the table).
ACTIVATION_REFERENCE: dict[str, int] = {
    "full": 3_690_642_944,
    "lora": 2_373_237_248,
    "lora-decoder": 1_860_975_104,
    "qlora-decoder": 1_860_975_104,
}
REFERENCE_SIDE = 1008
REFERENCE_QUERIES = 4
#: Fraction of the GPU the estimate may fill, and bytes kept back for the CUDA context, cuBLAS/cuDNN
#: workspaces and allocator fragmentation (none of which the estimate counts).
USABLE_FRACTION = 0.9
RESERVED_BYTES = 1 << 30
#: An out-of-memory error within this many optimizer steps (and before any checkpoint) steps down a rung.
FALLBACK_STEPS = 10

_NF4_BYTES_PER_WEIGHT = 0.5 + 1 / 64 + 4 / (64 * 256)  # 4 bits + 8-bit block scales + their fp32 scales
_OPTIMIZER_BYTES = {"adamw": 8, "adamw8bit": 2}  # two moments per trained parameter


def rung_config(config: TrainConfig, rung: str) -> TrainConfig:
    """``config`` with rung ``rung``'s overrides applied and ``loop.memory`` set to it."""
    if rung not in RUNGS:
        raise ConfigError(f"loop.memory={rung!r} is not a rung; choose auto, off or one of {list(LADDER)}")
    data = apply_overrides(to_dict(config), [*RUNGS[rung], f"loop.memory={rung}"])
    return from_dict(TrainConfig, data)


@dataclass(frozen=True)
class RungEstimate:
    """Estimated peak device memory of one training step on a rung (bytes)."""

    rung: str
    trainable: int  # trained parameters
    weights: int  # every parameter as stored (frozen ones in their dtype or 4 bits)
    gradients: int
    optimizer: int
    activations: int  # peak over forward, loss and backward, gradients made during backward included

    @property
    def total(self) -> int:
        """Weights + optimizer state + the activation peak (which holds the gradients made during
        backward; at least the gradients themselves)."""
        return self.weights + self.optimizer + max(self.activations, self.gradients)


def count_memory(sam3_config: Sam3Config, config: TrainConfig, bf16_autocast: bool) -> RungEstimate:
    """Weights, gradients and optimizer state of the model ``config.model`` builds from ``sam3_config``
    (counted on the meta device: no memory, no weights); ``activations`` 0. ``bf16_autocast`` resolves
    ``frozen_dtype: auto``."""
    with torch.device("meta"), quiet_peft():
        model = apply_finetuning(
            Sam3Model(sam3_config), config.model.finetune, exemplars=config.data.exemplars.enabled
        )
    frozen = config.model.frozen_dtype
    frozen_bytes = 2 if frozen == "bfloat16" or (frozen == "auto" and bf16_autocast) else 4
    quantized = _quantizable_weights(model, config) if config.model.quantization == "nf4" else set()
    trainable = weights = 0
    for param in model.parameters():
        if param.requires_grad:
            trainable += param.numel()
            weights += 4 * param.numel()
        elif id(param) in quantized:
            weights += int(_NF4_BYTES_PER_WEIGHT * param.numel())
        else:
            weights += (frozen_bytes if param.dim() > 1 else 4) * param.numel()
    return RungEstimate(
        rung=config.loop.memory,
        trainable=trainable,
        weights=weights,
        gradients=4 * trainable,
        optimizer=_OPTIMIZER_BYTES[config.optim.optimizer] * trainable,
        activations=0,
    )


def _quantizable_weights(model: nn.Module, config: TrainConfig) -> set[int]:
    """Ids of the frozen Linear weights ``quantize_frozen_linears`` would store in 4 bits."""
    heads = HEAD_MODULES if trains_heads(config.model.finetune) else ()
    return {
        id(module.weight)
        for name, module in model.named_modules()
        if type(module) is nn.Linear
        and not module.weight.requires_grad
        and not any(f".{h}." in f".{name}." for h in heads)
        and "modules_to_save" not in name
    }


def queries_per_step(dataset: QueryDataset, batch_size: int) -> int:
    """The most queries a step can hold: ``batch_size`` times the most queries (positive + negative) of an
    image of ``dataset``."""
    plan = dataset.plan
    most = max(
        len(q.positives) + negative_count(len(q.negative_candidates), plan.negatives) for q in plan.images
    )
    return batch_size * most


def estimate(
    sam3_config: Sam3Config, config: TrainConfig, queries_per_step: int, bf16_autocast: bool = True
) -> RungEstimate:
    """The peak estimate of ``config`` (its ``loop.memory`` a rung) for a step of ``queries_per_step``
    queries over ``config.loop.batch_size`` images at ``sam3_config.image_size``."""
    counted = count_memory(sam3_config, config, bf16_autocast)
    side = int(sam3_config.image_size)
    scale = (side / REFERENCE_SIDE) ** 2 * max(config.loop.batch_size, queries_per_step / REFERENCE_QUERIES)
    activations = int(ACTIVATION_REFERENCE[config.loop.memory] * scale)
    return dataclasses.replace(counted, activations=activations)


def fits(estimate: RungEstimate, device_bytes: int) -> bool:
    """Whether ``estimate`` fits a device of ``device_bytes`` with the safety margin."""
    return estimate.total <= USABLE_FRACTION * device_bytes - RESERVED_BYTES


@dataclass(frozen=True)
class RungChoice:
    """The rung a run uses and why (``reason`` is logged and written to ``config.yaml``)."""

    config: TrainConfig
    rung: str | None  # None: the config as written (loop.memory=off, or not on CUDA)
    reason: str
    estimates: tuple[RungEstimate, ...] = ()


def choose_rung(
    config: TrainConfig,
    sam3_config: Sam3Config,
    device: torch.device,
    queries_per_step: int,
    device_bytes: int | None = None,
) -> RungChoice:
    """Resolve ``config.loop.memory``: ``off`` keeps the config; a rung name applies it; ``auto`` on CUDA
    picks the highest rung whose estimate fits the device's total memory (``device_bytes``, read from the
    device when None) with the margin, and keeps the config as written elsewhere. The ladder starts at
    ``lora`` when the config is already in LoRA mode (auto never trains more than asked)."""
    memory = config.loop.memory
    if memory == "off":
        return RungChoice(config, None, "loop.memory=off: the config as written")
    if memory != "auto":
        chosen = rung_config(config, memory)
        return RungChoice(chosen, memory, f"loop.memory={memory}: forced")
    if device.type != "cuda" and device_bytes is None:
        kept = dataclasses.replace(config, loop=dataclasses.replace(config.loop, memory="off"))
        return RungChoice(kept, None, f"loop.memory=auto on {device.type}: the config as written")
    if device_bytes is None:
        device_bytes = torch.cuda.get_device_properties(device).total_memory
    start = LADDER.index("lora") if config.model.finetune.mode == "lora" else 0
    estimates = []
    for rung in LADDER[start:]:
        candidate = rung_config(config, rung)
        found = estimate(sam3_config, candidate, queries_per_step)
        estimates.append(found)
        if fits(found, device_bytes):
            usable = USABLE_FRACTION * device_bytes - RESERVED_BYTES
            reason = (
                f"loop.memory=auto chose {rung}: estimated peak {_gib(found.total)} fits the "
                f"{_gib(usable)} usable of this GPU's {_gib(device_bytes)} ({USABLE_FRACTION:.0%} less "
                f"{_gib(RESERVED_BYTES)})" + _skipped(estimates[:-1])
            )
            return RungChoice(candidate, rung, reason, tuple(estimates))
    lowest = estimates[-1]
    raise MemoryError(
        f"loop.memory=auto: no rung fits this GPU ({_gib(device_bytes)}): the lowest, {lowest.rung}, needs "
        f"about {_gib(lowest.total)} for {queries_per_step} queries per step. Lower the queries per step "
        "(data.negatives=K, loop.batch_size) or data.resolution."
    )


def _skipped(estimates: list[RungEstimate]) -> str:
    if not estimates:
        return ""
    return "; too big: " + ", ".join(f"{e.rung} {_gib(e.total)}" for e in estimates)


def _gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:.1f} GiB"


def next_rung(rung: str | None) -> str | None:
    """The rung below ``rung`` (None at the bottom or for a config as written)."""
    if rung is None or rung == LADDER[-1]:
        return None
    return LADDER[LADDER.index(rung) + 1]


def out_of_memory_action(
    choice: RungChoice, steps_done: int, checkpointed: bool, resumed: bool, world_size: int
) -> str | None:
    """After a CUDA out-of-memory error: the rung to restart the run on, or None when the error must
    stand (the message then comes from :func:`out_of_memory_message`). A run steps down only when the
    rung was chosen automatically, in its first :data:`FALLBACK_STEPS` steps, before any checkpoint,
    not resumed, in one process."""
    automatic = choice.rung is not None and choice.reason.startswith("loop.memory=auto")
    early = steps_done < FALLBACK_STEPS and not checkpointed and not resumed
    if automatic and early and world_size == 1:
        return next_rung(choice.rung)
    return None


def out_of_memory_message(choice: RungChoice, steps_done: int) -> str:
    """What to tell the user when an out-of-memory error ends the run."""
    here = choice.rung or "the config as written (loop.memory=off)"
    below = next_rung(choice.rung) if choice.rung else LADDER[-1]
    advice = (
        f"try loop.memory={below}" if below else "lower the queries per step (data.negatives=K) or resolution"
    )
    return f"CUDA out of memory after {steps_done} optimizer step(s) on memory rung {here}; {advice}"
