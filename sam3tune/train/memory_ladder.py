"""The memory ladder: four complete training setups from most to least GPU memory, the estimate of each
one's peak, the automatic choice for the GPU at hand and the step down after an early out-of-memory.

A rung is plain data: ``key=value`` overrides of :class:`~sam3tune.train.config.TrainConfig`, applied on
top of the run's config (``loop.memory=RUNG``, or picked by ``loop.memory=auto``) to every key the user did
not set: a key set in the config file or an override keeps its value (reported in the log and in
``config.yaml`` next to what the rung would set), and a rung whose defining setting (:data:`DEFINING`) the
user set otherwise is refused, naming both values (``auto`` skips it instead):

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

import copy
import dataclasses
import logging
from dataclasses import dataclass

import torch
from torch import nn
from transformers import Sam3Config, Sam3Model

from sam3tune.config import ConfigError, apply_overrides, flatten, from_dict, parse_yaml, to_dict
from sam3tune.data import QueryDataset
from sam3tune.data.queries import negative_count
from sam3tune.data.semantic import SemanticDataset
from sam3tune.devices import device_memory
from sam3tune.model.finetune import HEAD_MODULES, apply_finetuning, quiet_peft, trains_heads
from sam3tune.model.prompt_token import set_prompt_token
from sam3tune.train.config import TrainConfig
from sam3tune.train.loop import uses_bf16

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


#: The settings that make each rung what it is: a user value that differs cannot be kept on the rung.
DEFINING = ("model.finetune.mode", "model.quantization")


class RungConflict(ConfigError):
    """A rung whose defining setting the user set to another value (both values named)."""


def apply_rung(config: TrainConfig, rung: str) -> tuple[TrainConfig, list[str]]:
    """``config`` on rung ``rung`` (``loop.memory`` set to it) and the user's settings kept against it.

    The rung's overrides apply to every key the user did not set (``TrainConfig.is_set``); a set key keeps its
    value, listed as ``"key=yours (the rung sets its own)"``. Raises :class:`RungConflict` when the user set
    a :data:`DEFINING` key to another value than the rung's."""
    if rung not in RUNGS:
        raise ConfigError(f"loop.memory={rung!r} is not a rung; choose auto, off or one of {list(LADDER)}")
    given = flatten(to_dict(config))
    applied, kept = [], []
    for item in RUNGS[rung]:
        key, raw = item.split("=", 1)
        ours = parse_yaml(raw)
        yours = {k[len(key) + 1 :]: v for k, v in given.items() if k.startswith(key + ".")} or given.get(key)
        if not config.is_set(key) or yours == ours:
            applied.append(item)
            continue
        if key in DEFINING:
            raise RungConflict(
                f"loop.memory={rung} trains with {key}={ours} but you set {key}={yours}: drop one of them "
                f"(loop.memory=off trains the config as written)"
            )
        kept.append(f"{key}={yours} (yours; the rung sets {ours})")
    data = apply_overrides(to_dict(config), [*applied, f"loop.memory={rung}"])
    result = from_dict(TrainConfig, data)
    result.set_keys = config.set_keys
    return result, kept


def rung_config(config: TrainConfig, rung: str) -> TrainConfig:
    """``config`` on rung ``rung`` (see :func:`apply_rung`: the user's settings kept)."""
    return apply_rung(config, rung)[0]


def changed_keys(before: TrainConfig, after: TrainConfig) -> list[str]:
    """``"key: old -> new"`` for every setting a rung changed (``loop.memory`` left out)."""
    old, new = flatten(to_dict(before)), flatten(to_dict(after))
    return [
        f"{k}: {old.get(k)} -> {new.get(k)}"
        for k in sorted(set(old) | set(new))
        if old.get(k) != new.get(k) and k != "loop.memory"
    ]


def _report(changed: list[str], kept: list[str]) -> str:
    parts = []
    if changed:
        parts.append("set " + ", ".join(changed))
    if kept:
        parts.append("kept as you set them: " + ", ".join(kept))
    return "".join(f"; {p}" for p in parts)


@dataclass(frozen=True)
class RungEstimate:
    """Estimated peak device memory of one training step on a rung (bytes)."""

    rung: str
    trainable: int  # trained parameters
    weights: int  # every parameter as stored (frozen ones in their dtype or 4 bits)
    gradients: int
    optimizer: int
    activations: int  # peak over forward, loss and backward, gradients made during backward included
    teacher: int = 0  # distillation with full fine-tuning: the frozen copy of the starting model

    @property
    def total(self) -> int:
        """Weights (and a distillation teacher's) + optimizer state + the activation peak (which holds the
        gradients made during backward; at least the gradients themselves)."""
        return self.weights + self.teacher + self.optimizer + max(self.activations, self.gradients)


def count_memory(sam3_config: Sam3Config, config: TrainConfig, bf16_autocast: bool) -> RungEstimate:
    """Weights, gradients and optimizer state of the model ``config.model`` builds from ``sam3_config``, and
    a distillation teacher's copy (counted on the meta device: no memory, no weights); ``activations`` 0.
    ``bf16_autocast`` resolves ``frozen_dtype: auto``."""
    with torch.device("meta"), quiet_peft():
        sam3 = Sam3Model(copy.deepcopy(sam3_config))
        if config.model.prompt_token != "auto":  # which geometry-encoder weights train depends on it
            set_prompt_token(sam3, config.model.prompt_token)
        model = apply_finetuning(sam3, config.model.finetune, exemplars=config.data.exemplars.enabled)
    frozen = config.model.frozen_dtype
    frozen_bytes = 2 if frozen == "bfloat16" or (frozen == "auto" and bf16_autocast) else 4
    quantized = _quantizable_weights(model, config) if config.model.quantization == "nf4" else set()
    trainable = weights = total = 0
    for param in model.parameters():
        total += param.numel()
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
        teacher=teacher_bytes(config, total, frozen_bytes),
    )


def teacher_bytes(config: TrainConfig, parameters: int, frozen_bytes: int) -> int:
    """The distillation teacher's weights (``retention.distill``): 0 under LoRA (the same network with its
    adapters off), a frozen copy of all ``parameters`` at ``frozen_bytes`` each with full fine-tuning."""
    if config.retention.distill.weight <= 0 or config.model.finetune.mode == "lora":
        return 0
    return parameters * frozen_bytes


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


def queries_per_step(dataset: QueryDataset | SemanticDataset, batch_size: int) -> int:
    """The most queries a step can hold: ``batch_size`` times the most queries (positive + negative) of an
    image of ``dataset`` (negatives as its ``config.negatives``)."""
    negatives = dataset.config.negatives
    return batch_size * max(p + negative_count(c, negatives) for p, c in _queries_per_image(dataset))


def _queries_per_image(dataset: QueryDataset | SemanticDataset) -> list[tuple[int, int]]:
    """(positives, negative candidates) of every image of a training dataset."""
    if isinstance(dataset, SemanticDataset):
        classes = len(dataset.split.classes)
        return [(len(image.present), classes - len(image.present)) for image in dataset.split.images]
    return [(len(q.positives), len(q.negative_candidates)) for q in dataset.plan.images]


class QueryBudgetError(ConfigError):
    """A training step would hold more queries than the device's memory allows (the numbers named)."""


def _activation_rung(config: TrainConfig) -> str:
    """The rung whose measured activation peak stands for ``config``'s (its own, or the nearest setup)."""
    if config.loop.memory in RUNGS:
        return config.loop.memory
    finetune = config.model.finetune
    if finetune.mode == "full":
        return "full"
    return "lora" if "vision" in finetune.lora.components else "lora-decoder"


def query_budget(sam3_config: Sam3Config, config: TrainConfig, device_bytes: int, bf16_autocast: bool) -> int:
    """The most queries a training step of ``config`` may hold on a device of ``device_bytes``: what is
    left of the usable memory after the weights and optimizer state, over the estimated activation bytes
    of one query (the measured full-size reference scaled by the pixel count, see :func:`estimate`; an
    upper bound for smaller architectures, about 4x the measured peak of ``tiny``)."""
    counted = count_memory(sam3_config, config, bf16_autocast)
    side = int(sam3_config.image_size)
    per_query = (
        ACTIVATION_REFERENCE[_activation_rung(config)] * (side / REFERENCE_SIDE) ** 2 / REFERENCE_QUERIES
    )
    room = USABLE_FRACTION * device_bytes - RESERVED_BYTES - counted.weights - counted.optimizer
    return max(0, int(room // per_query))


def bound_queries(
    dataset: QueryDataset | SemanticDataset,
    config: TrainConfig,
    sam3_config: Sam3Config,
    device_bytes: int,
    device_name: str,
    bf16_autocast: bool,
    extra_per_image: int = 0,
) -> tuple[QueryDataset | SemanticDataset, TrainConfig, str]:
    """Keep a training step's queries within what the device holds, on every device (the GPU's memory,
    else the machine's RAM): every absent category is a negative query by default, so 5,000 categories
    make 5,000 queries per image. Returns the dataset, the config and a note (empty when nothing
    changed). Over the budget, ``data.negatives`` left at its default is capped to the K negatives per
    image that fit (sampled per image and epoch; the note says so with the numbers); a ``data.negatives``
    the user set, or positives alone over the budget, raise :class:`QueryBudgetError` with the numbers.
    ``extra_per_image``: queries the forgetting remedies add to every image (never capped: counted with
    the positives)."""
    batch = config.loop.batch_size
    budget = query_budget(sam3_config, config, device_bytes, bf16_autocast)
    needed = queries_per_step(dataset, batch) + batch * extra_per_image
    if needed <= budget:
        return dataset, config, ""
    images = _queries_per_image(dataset)
    positives = max(p for p, _ in images) + extra_per_image
    numbers = (
        f"{needed} queries per step ({batch} image(s) x up to {needed // batch}: every absent category is a "
        f"negative query, data.negatives={config.data.negatives}) exceed the {budget} that this "
        f"{device_name} ({_gib(device_bytes)}) holds by the memory estimate"
    )
    per_image = budget // batch
    if config.is_set("data.negatives") or per_image <= positives:
        fix = (
            f"set data.negatives=K with K <= {per_image - positives} (negatives sampled per image and epoch)"
            if per_image > positives
            else (
                f"an image has {positives} positive categories, more than fit without any negative: "
                "train on a device with more memory, on fewer categories, or with a smaller loop.batch_size"
            )
        )
        raise QueryBudgetError(f"{numbers}: {fix}")
    negatives = per_image - positives
    data = dataclasses.replace(config.data, negatives=negatives)
    config = dataclasses.replace(config, data=data)
    if isinstance(dataset, SemanticDataset):
        dataset = SemanticDataset(dataset.split, data, train=True, seed=dataset.seed, augment=dataset.augment)
    else:
        dataset = QueryDataset(dataset.plan, data, train=True, seed=dataset.seed, augment=dataset.augment)
    return dataset, config, f"{numbers}: data.negatives capped to {negatives} sampled per image and epoch"


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
        chosen, kept = apply_rung(config, memory)
        reason = f"loop.memory={memory}: forced" + _report(changed_keys(config, chosen), kept)
        return RungChoice(chosen, memory, reason)
    if device.type != "cuda" and device_bytes is None:
        kept = dataclasses.replace(config, loop=dataclasses.replace(config.loop, memory="off"))
        return RungChoice(kept, None, f"loop.memory=auto on {device.type}: the config as written")
    if device_bytes is None:
        device_bytes = torch.cuda.get_device_properties(device).total_memory
    start = LADDER.index("lora") if config.model.finetune.mode == "lora" else 0
    estimates, refused = [], []
    for rung in LADDER[start:]:
        try:
            candidate, kept = apply_rung(config, rung)
            found = estimate(sam3_config, candidate, queries_per_step)
        except ValueError as err:  # RungConflict, or a setup your settings make impossible on this rung
            refused.append(f"{rung} ({str(err).split(': drop')[0]})")
            continue
        not_tried = f"; not tried, they change what you set: {', '.join(refused)}" if refused else ""
        estimates.append(found)
        if fits(found, device_bytes):
            usable = USABLE_FRACTION * device_bytes - RESERVED_BYTES
            reason = (
                f"loop.memory=auto chose {rung}: estimated peak {_gib(found.total)} fits the "
                f"{_gib(usable)} usable of this GPU's {_gib(device_bytes)} ({USABLE_FRACTION:.0%} less "
                f"{_gib(RESERVED_BYTES)})"
                + _skipped(estimates[:-1])
                + not_tried
                + _report(changed_keys(config, candidate), kept)
            )
            return RungChoice(candidate, rung, reason, tuple(estimates))
    not_tried = f"; not tried, they change what you set: {', '.join(refused)}" if refused else ""
    if not estimates:
        raise ConfigError(f"loop.memory=auto: no rung keeps your settings{not_tried}")
    lowest = estimates[-1]
    raise MemoryError(
        f"loop.memory=auto: no rung fits this GPU ({_gib(device_bytes)}): the lowest, {lowest.rung}, needs "
        f"about {_gib(lowest.total)} for {queries_per_step} queries per step{not_tried}. Lower the queries "
        "per step (data.negatives=K, loop.batch_size) or data.resolution, or set loop.memory=off to train "
        "the config as written."
    )


def _skipped(estimates: list[RungEstimate]) -> str:
    if not estimates:
        return ""
    return "; too big: " + ", ".join(f"{e.rung} {_gib(e.total)}" for e in estimates)


def _gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:.1f} GiB"


def next_rung(rung: str | None, config: TrainConfig | None = None) -> str | None:
    """The rung below ``rung`` (None at the bottom or for a config as written); with ``config``, the
    first one below that keeps the user's settings (:func:`apply_rung`)."""
    if rung is None:
        return None
    for lower in LADDER[LADDER.index(rung) + 1 :]:
        try:
            if config is not None:
                apply_rung(config, lower)
        except RungConflict:
            continue
        return lower
    return None


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
        return next_rung(choice.rung, choice.config)
    return None


def out_of_memory_message(choice: RungChoice, steps_done: int) -> str:
    """What to tell the user when an out-of-memory error ends the run."""
    here = choice.rung or "the config as written (loop.memory=off)"
    below = next_rung(choice.rung) if choice.rung else LADDER[-1]
    advice = (
        f"try loop.memory={below}" if below else "lower the queries per step (data.negatives=K) or resolution"
    )
    return f"CUDA out of memory after {steps_done} optimizer step(s) on memory rung {here}; {advice}"


def plan_memory(
    config: TrainConfig,
    dataset: QueryDataset | SemanticDataset,
    sam3_config: Sam3Config,
    device: torch.device,
    device_bytes: int | None = None,
    extra_per_image: int = 0,
) -> tuple[QueryDataset | SemanticDataset, RungChoice]:
    """The memory rung (:func:`choose_rung`) and the query bound (:func:`bound_queries`) of a training run
    on ``device`` (its memory: ``device_bytes``, read from the device when None), with ``extra_per_image``
    queries per image besides the dataset's (the forgetting remedies'). Returns the training dataset to
    use and the choice, whose ``config`` and ``reason`` (logged, written to ``config.yaml``) hold both."""
    batch = config.loop.batch_size
    queries = queries_per_step(dataset, batch) + batch * extra_per_image
    choice = choose_rung(config, sam3_config, device, queries)
    dataset, bounded, note = bound_queries(
        dataset,
        choice.config,
        sam3_config,
        device_bytes or device_memory(device),
        "GPU" if device.type == "cuda" else f"{device.type.upper()} machine",
        uses_bf16(choice.config.loop.amp, device),
        extra_per_image,
    )
    if note:
        log.warning("%s", note)
        choice = dataclasses.replace(choice, config=bounded, reason=f"{choice.reason}; {note}")
    return dataset, choice
