"""The training configuration: dataclasses whose defaults are Meta's official SAM 3 fine-tuning
recipe (``roboflow_v100_full_ft_100_images.yaml``), loadable from YAML with ``key=value`` overrides
through :func:`sam3tune.config.load_config`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from sam3tune.config import PROVENANCE, flatten, require, require_device, require_range, to_dict
from sam3tune.data.config import DataConfig
from sam3tune.eval.config import EvalConfig, RetentionConfig
from sam3tune.loss import CriterionConfig
from sam3tune.model.config import ModelConfig


@dataclass
class OptimConfig:
    """AdamW with per-component learning rates (see :mod:`sam3tune.train.param_groups`)."""

    optimizer: Literal["adamw", "adamw8bit"] = "adamw"  # adamw8bit: bitsandbytes' 8-bit moments

    lr_transformer: float = 8e-5  # DETR encoder/decoder, geometry encoder, mask decoder, heads
    lr_vision: float = 2.5e-5  # ViT backbone and FPN neck, before layer-wise decay
    lr_text: float = 5e-6  # text encoder and its projection
    vision_layer_decay: float = 0.9  # per ViT block, last block x0.9, stem x0.9^(N+1)
    weight_decay: float = 0.1  # 0 for biases and normalisation layers
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    grad_clip_norm: float | None = 0.1  # max global L2 norm of the gradients; null = no clipping
    # LoRA mode: adapter weights start at zero and live in a low-rank subspace, so they take a larger
    # step than full fine-tuning (the usual LoRA range is 1e-4 to 3e-4) and no weight decay or layer
    # decay; fully trained parts (heads) keep the recipe's rates above.
    lora_lr: float = 2e-4
    lora_weight_decay: float = 0.0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Refuse what AdamW would take and train wrongly with (or fail on with a torch traceback)."""
        require_range(self, "lr_transformer", "lr_vision", "lr_text", "lora_lr", low=0)
        require_range(self, "weight_decay", "lora_weight_decay", low=0)
        require_range(self, "vision_layer_decay", low=0, high=1, low_open=True)
        require_range(self, "eps", low=0, low_open=True)
        # <= 0 would zero every gradient or turn it around (ascent); null turns clipping off
        require_range(self, "grad_clip_norm", low=0, low_open=True)
        betas = self.betas
        require(
            len(betas) == 2 and all(isinstance(b, (int, float)) and 0 <= b < 1 for b in betas),
            "betas",
            betas,
            "must be two numbers in [0, 1) (AdamW's beta1, beta2)",
        )


@dataclass
class ScheduleConfig:
    """Inverse-square-root schedule (see :mod:`sam3tune.train.schedule`), in optimizer steps."""

    warmup_steps: int = 20
    cooldown_steps: int = 20
    timescale: int = 20

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        require_range(self, "warmup_steps", "cooldown_steps", low=0)
        require_range(self, "timescale", low=1)


@dataclass
class LoopConfig:
    """How long and how the loop runs."""

    epochs: int = 20
    batch_size: int = 1  # images per process per micro-batch, each with all its queries
    grad_accum_steps: int = 1  # micro-batches per optimizer step
    # official random square resize + random-offset pad of training images; false trains on the
    # evaluation transform (plain resize; negatives still as data.negatives), e.g. to memorise
    augment: bool = True
    max_steps: int | None = None  # cap on optimizer steps (the schedule spans the capped run)
    amp: Literal["auto", "bf16", "off"] = "auto"  # auto = bf16 autocast on CUDA, off elsewhere
    seed: int = 123
    device: str = "auto"  # auto = cuda if available (the local rank's GPU under torchrun), else cpu
    num_workers: int = 2  # data-loading worker processes per training process
    max_consecutive_nonfinite: int = 5  # NaN/inf steps in a row before the run aborts
    checkpoint_every_epochs: int = 1  # save `last` after every N epochs (and always at the end)
    checkpoint_every_steps: int = 0  # also save `last` every N steps within an epoch (0: never)
    find_unused_parameters: bool = True  # DDP: some SAM 3 parameters get no gradient in a step
    # memory rung (sam3tune.train.memory_ladder): auto = on CUDA, the highest rung whose estimated peak
    # fits the GPU (the config as written elsewhere); off = the config as written; or a rung name:
    # full, lora, lora-decoder, qlora-decoder
    memory: Literal["auto", "off", "full", "lora", "lora-decoder", "qlora-decoder"] = "auto"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        require_range(self, "epochs", "batch_size", "grad_accum_steps", "max_consecutive_nonfinite", low=1)
        require_range(self, "max_steps", low=1)  # null: no cap
        require_range(self, "num_workers", "checkpoint_every_epochs", "checkpoint_every_steps", low=0)
        require_range(self, "seed", low=0, high=2**32 - 1)  # numpy and DataLoader seeds
        require_device(self)


@dataclass
class ValidationConfig:
    """Validation on the held-out split and the choice of the `best` checkpoint."""

    every_epochs: int = 10  # also after the last epoch; 0 = never
    map: bool = True  # also COCO AP, cgF1 and prompt specificity through sam3tune.eval (main process)
    # a key of the validation results: loss or a loss component, or with map: bbox_AP, bbox_AP50,
    # segm_AP, bbox_cgF1, false_fire_rate, ...
    best_metric: str = "bbox_AP"
    best_mode: Literal["min", "max"] = "max"
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        require_range(self, "every_epochs", low=0)
        require(bool(self.best_metric.strip()), "best_metric", self.best_metric, "must name a metric")
        require(
            self.map or "loss" in self.best_metric,
            "best_metric",
            self.best_metric,
            "needs the COCO metrics, but val.map is false; set val.map=true or val.best_metric=loss "
            "val.best_mode=min",
        )


@dataclass
class DistillConfig:
    """Distillation from the starting model on the retention prompts (:mod:`sam3tune.loss.distillation`)."""

    weight: float = 0.0  # factor of the distillation terms added to the criterion's total; 0 = off

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        require_range(self, "weight", low=0)


@dataclass
class ReplayConfig:
    """Pseudo-label replay: the starting model's confident detections of the retention prompts on the
    training images become queries of the official criterion (:mod:`sam3tune.data.retention_queries`)."""

    enabled: bool = False
    # positives: detections >= retention.score_threshold; negatives: best score below this; between: not asked
    negative_threshold: float = 0.25

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        require_range(self, "negative_threshold", low=0, high=1)


@dataclass
class ConfusableConfig:
    """Confusable negatives: a negative query whose image holds an object its prompt is confused with is
    asked ``repeats`` more times (and always, when ``data.negatives`` samples k)."""

    repeats: int = 0  # 0 = off
    pairs: list[str] = field(default_factory=list)  # "moon -> heart": moon is confused with heart
    from_eval: Path | None = None  # an eval.json: its model's confusion table gives pairs
    from_start: bool = False  # the starting model's confusion table on the training images gives pairs
    min_count: int = 2  # a pair from a confusion table needs at least this many detections

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        require_range(self, "repeats", low=0)
        require_range(self, "min_count", low=1)


@dataclass
class RetentionTrainConfig(RetentionConfig):
    """``retention``: the untuned prompts (measured during validation, see :class:`RetentionConfig`) and
    the remedies that keep them (docs/train.md, "Fine-tune without forgetting"); all off by default."""

    distill: DistillConfig = field(default_factory=DistillConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    confusable: ConfusableConfig = field(default_factory=ConfusableConfig)
    # replay / distillation ask every retention prompt on every training image; > 0: only this many per
    # image (drawn anew each epoch), for many retention prompts
    prompts_per_image: int = 0

    def validate(self) -> None:
        super().validate()
        require_range(self, "prompts_per_image", low=0)
        require(
            self.enabled or not (self.distill.weight > 0 or self.replay.enabled),
            "distill.weight" if self.distill.weight > 0 else "replay.enabled",
            self.distill.weight if self.distill.weight > 0 else self.replay.enabled,
            "needs retention.prompts (or retention.data): the prompts whose answers are kept",
        )
        require(
            not self.replay.enabled or self.replay.negative_threshold <= self.score_threshold,
            "replay.negative_threshold",
            self.replay.negative_threshold,
            f"must be <= retention.score_threshold ({self.score_threshold})",
        )

    @property
    def remedies(self) -> bool:
        """Whether any remedy changes training."""
        return self.distill.weight > 0 or self.replay.enabled or self.confusable.repeats > 0


@dataclass
class TrainConfig:
    """Everything a training run needs; the resolved copy is written to ``RUN_DIR/config.yaml``."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: CriterionConfig = field(default_factory=CriterionConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    val: ValidationConfig = field(default_factory=ValidationConfig)
    # prompts the run does not tune: validation measures them against the starting model; remedies keep them
    retention: RetentionTrainConfig = field(default_factory=RetentionTrainConfig)
    output_dir: Path = Path("runs")  # a run goes to output_dir/run_name
    run_name: str | None = None  # default: the start time, YYYYmmdd-HHMMSS
    export: bool = True  # at the end, write the best (else last) weights as RUN_DIR/model (+ adapters)
    #: the dotted keys the user set (config file, overrides; filled by ``load_config``), which presets
    #: such as the memory rungs keep as set; None for a config built in code (then every value that
    #: differs from the recipe default counts as set). Not a setting: never in ``config.yaml``.
    set_keys: frozenset[str] | None = field(default=None, compare=False, repr=False, metadata=PROVENANCE)

    def __post_init__(self) -> None:
        self.validate()

    def user_keys(self) -> frozenset[str]:
        """The dotted keys the user set: ``set_keys``, or for a config built in code every key whose value
        differs from the recipe default."""
        if self.set_keys is not None:
            return self.set_keys
        given, default = flatten(to_dict(self)), flatten(to_dict(TrainConfig()))
        return frozenset(k for k, v in given.items() if default.get(k) != v)

    def is_set(self, key: str) -> bool:
        """Whether the user set dotted ``key``, a mapping above it or an entry below it."""
        return any(k == key or k.startswith(key + ".") or key.startswith(k + ".") for k in self.user_keys())

    def validate(self) -> None:
        name = self.run_name
        if name is not None:  # one plain folder name: the run stays inside output_dir
            require(
                bool(name.strip())
                and name not in (".", "..")
                and not any(sep in name for sep in ("/", "\\", "\0")),
                "run_name",
                name,
                "must be one folder name inside output_dir (no '/', '\\', '..' or empty name)",
            )
