"""``diagnose(config)``: what ``sam3tune train`` would run with ``config``, checked before it runs.

The data report, then one training step on the first batch (the trainer's model, criterion, optimiser,
precision), then every check, collected as :class:`~sam3tune.doctor.flags.Flag` data in a
:class:`DoctorReport`. ``diagnose_batch`` does the step part for a batch built elsewhere (a custom
dataset, a batch made by hand).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from sam3tune.data import (
    Batch,
    DataConfig,
    DataError,
    QueryDataset,
    collate,
    resolve_split,
)
from sam3tune.data.inspection import inspect_dataset
from sam3tune.devices import device_memory, resolve_device
from sam3tune.doctor.data_report import DataReport, data_flags, data_report
from sam3tune.doctor.expected_loss import ExpectedTotal, expected_total, total_flags
from sam3tune.doctor.flags import SEVERITIES, Flag, make_flag
from sam3tune.doctor.ladder import RungMemory, ladder_memory
from sam3tune.doctor.learning_rates import (
    LearningRateGroup,
    learning_rate_flags,
    learning_rate_groups,
    optimiser_flags,
)
from sam3tune.doctor.loss_table import LossTable, loss_flags, loss_table
from sam3tune.doctor.memory import MemoryEstimate
from sam3tune.doctor.recipe_checks import (
    lora_flags,
    loss_config_flags,
    negatives_flags,
    no_gradient_flags,
    parameter_flags,
)
from sam3tune.doctor.step_probe import probe_training_step
from sam3tune.doctor.target_checks import target_flags
from sam3tune.loss import Sam3Criterion
from sam3tune.model import (
    ComponentParameters,
    ModelBundle,
    Sam3ForTraining,
    WeightsNotLoadedError,
    build_training_model,
)
from sam3tune.train.config import TrainConfig
from sam3tune.train.dataset_kinds import training_dataset
from sam3tune.train.loop import uses_bf16
from sam3tune.train.memory_ladder import (
    RUNGS,
    QueryBudgetError,
    bound_queries,
    rung_config,
)
from sam3tune.train.param_groups import build_optimizer, role_of
from sam3tune.train.recipe import data_for_model, load_bundle
from sam3tune.train.retention import extra_queries_per_image
from sam3tune.train.sampler import EpochBatchSampler

SAM3_PATCH_SIZE = 14
"""ViT patch side of SAM 3, used for the data report when the model could not be loaded."""
_NO_TARGET_KINDS = ("no_usable_queries", "no_valid_annotations")


@dataclass(frozen=True)
class BatchSummary:
    """The batch the step ran on: where it came from, its size and image ids."""

    description: str
    images: int
    queries: int
    objects: int
    image_ids: tuple[int, ...]


@dataclass
class DoctorReport:
    """Everything the doctor found; each part is None when it could not be computed (a flag says why).

    ``setup``: what was run (model, mode, resolution, batch size, device, precision);
    ``learning_rates``: the optimiser's parameter groups next to the recipe's rates;
    ``grad_norm``: the first step's gradient norm before clipping at ``max_grad_norm``.
    """

    flags: list[Flag] = field(default_factory=list)
    setup: dict[str, str] = field(default_factory=dict)
    data: DataReport | None = None
    batch: BatchSummary | None = None
    losses: LossTable | None = None
    expected: ExpectedTotal | None = None
    parameters: list[ComponentParameters] | None = None
    learning_rates: list[LearningRateGroup] | None = None
    grad_norm: float | None = None
    max_grad_norm: float | None = None
    memory: MemoryEstimate | None = None
    ladder: list[RungMemory] | None = None

    def codes(self, severity: str | None = None) -> set[str]:
        """Flag codes (of one severity, or all)."""
        return {f.code for f in self.flags if severity is None or f.severity == severity}

    @property
    def ok(self) -> bool:
        """No flag is an error."""
        return not self.codes("error")

    @property
    def exit_status(self) -> int:
        """0 when :attr:`ok`, else 1."""
        return 0 if self.ok else 1

    def sorted_flags(self) -> list[Flag]:
        """Errors first, then warnings, then info; in the order found within a severity."""
        return sorted(self.flags, key=lambda f: SEVERITIES.index(f.severity))


def diagnose(
    config: TrainConfig,
    *,
    progress: bool = False,
    say: Callable[[str], None] = lambda message: None,
    ladder: bool = False,
) -> DoctorReport:
    """Check the run ``config`` describes (``config.data.root`` must be set): data, model, first batch.

    ``say`` receives a line before each slow stage (loading, the training step). ``ladder``: also one
    step per memory rung on the same batch (``report.ladder``). A forced rung (``loop.memory=RUNG``) is
    applied as training applies it.
    """
    if config.loop.memory in RUNGS:
        config = rung_config(config, config.loop.memory)
    report = DoctorReport(max_grad_norm=config.optim.grad_clip_norm)
    report.flags += loss_config_flags(config.loss) + optimiser_flags(config.optim)
    device = resolve_device(config.loop.device, 0)
    say(f"loading model {config.model.name}")
    bundle, model = _build_model(config, report, device)
    data_config = _data_for_model(config.data, bundle, report, config.is_set("data.resolution"))
    report.setup = _setup(config, data_config, bundle)
    dataset = None
    if data_config is not None:
        say(f"reading the training split of {data_config.root}")
        dataset = _load_data(config, data_config, bundle, report, progress)
    if model is None or dataset is None:
        return report
    dataset = _bound_queries(dataset, dataclasses.replace(config, data=data_config), bundle, device, report)
    if dataset is None:
        return report
    batch = _first_batch(dataset, config, bundle, report)
    if batch is None:
        return report
    model.to(device)
    say(f"running one training step on {device}")
    _diagnose_step(report, model, batch, config, dataset_targets=report.data.targets if report.data else None)
    if ladder:
        del model
        say(f"one training step per memory rung on {device}")
        report.ladder = ladder_memory(config, batch, device)
    return report


def diagnose_batch(
    model: Sam3ForTraining,
    batch: Batch,
    config: TrainConfig | None = None,
    *,
    dataset_targets: int | None = None,
) -> DoctorReport:
    """Check one training step of ``model`` (already built, on its device) on ``batch``, under
    ``config``'s loss, optimiser and precision (default: the recipe). ``dataset_targets``: the target
    count of the dataset the batch came from, if known. The model's weights take one optimizer step."""
    config = config or TrainConfig()
    report = DoctorReport(max_grad_norm=config.optim.grad_clip_norm)
    report.flags += loss_config_flags(config.loss) + optimiser_flags(config.optim)
    device = next(model.parameters()).device
    report.setup = {"model": type(model).__name__, "precision": _precision(config, device)}
    report.batch = _summarise(batch, "given batch")
    _diagnose_step(report, model, batch, config, dataset_targets=dataset_targets)
    return report


def _precision(config: TrainConfig, device: torch.device) -> str:
    """The trainer's precision on ``device`` (``loop.amp=auto``: bf16 autocast on CUDA only)."""
    return "bf16 autocast" if uses_bf16(config.loop.amp, device) else "float32"


def _setup(config: TrainConfig, data: DataConfig | None, bundle: ModelBundle | None) -> dict[str, str]:
    device = resolve_device(config.loop.device, 0)
    finetune = config.model.finetune
    mode = finetune.mode + (f" (freeze {', '.join(finetune.freeze)})" if finetune.freeze else "")
    resolution = data.resolution if data else (bundle.image_size if bundle else config.data.resolution)
    return {
        "data": str(config.data.root),
        "model": config.model.name,
        "finetune": mode,
        "resolution": f"{resolution} px",
        "batch": f"{config.loop.batch_size} image(s) per GPU, each with all its queries",
        "device": str(device),
        "precision": _precision(config, device),
    }


def _build_model(
    config: TrainConfig, report: DoctorReport, device: torch.device
) -> tuple[ModelBundle | None, Sam3ForTraining | None]:
    """The bundle and training model as the trainer loads them for ``device`` (frozen weights in bf16
    exactly when the trainer uses bf16 there: ``uses_bf16``), with ``model_build_failed`` / LoRA flags."""
    try:
        bundle = load_bundle(config)
    except (WeightsNotLoadedError, ValueError, OSError) as err:
        report.flags.append(make_flag("model_build_failed", f"{config.model.name}: {err}"))
        return None, None
    lora = lora_flags(bundle.model, config.model.finetune)
    if lora:
        report.flags += lora
        return bundle, None
    try:
        model = build_training_model(
            bundle,
            config.model,
            exemplars=config.data.exemplars.enabled,
            bf16_autocast=uses_bf16(config.loop.amp, device),
        )
    except (WeightsNotLoadedError, ValueError) as err:
        report.flags.append(make_flag("model_build_failed", str(err)))
        return bundle, None
    report.parameters = model.parameter_table()
    report.flags += parameter_flags(model, config.model.finetune)
    return bundle, model


def _data_for_model(
    data: DataConfig, bundle: ModelBundle | None, report: DoctorReport, set_by_user: bool = False
) -> DataConfig | None:
    """``data.resolution`` follows the model's input size when left at its default, as in the trainer
    (``sam3tune.train.recipe``); any other mismatch stops training."""
    if data.root is None:
        report.flags.append(make_flag("data_unusable", "data.root is not set (pass --data PATH)"))
        return None
    if bundle is None:
        return data
    try:
        return data_for_model(data, bundle.image_size, set_by_user)
    except ValueError as err:
        report.flags.append(make_flag("data_unusable", str(err)))
        return None


def _load_data(
    config: TrainConfig, data: DataConfig, bundle: ModelBundle | None, report: DoctorReport, progress: bool
) -> QueryDataset | None:
    """The training dataset as the trainer builds it, and the data report of its split."""
    try:
        run_config = dataclasses.replace(config, data=data)
        dataset = training_dataset(run_config, bundle.tokenize if bundle else None, progress=progress)
        files = resolve_split(data.root, data.train, data.train_images, data.hf_bbox_format)
    except DataError as err:
        code = "dataset_without_targets" if err.kind in _NO_TARGET_KINDS else "data_unusable"
        report.flags.append(make_flag(code, f"{err} [{err.kind}]"))
        return None
    inspection = inspect_dataset(files.annotation_file, data, image_dir=files.image_dir, progress=progress)
    inspection["splits"][0]["problems"] = dataset.plan.problems.as_list()  # with the tokenizer's findings
    patch = (
        bundle.model.config.vision_config.backbone_config.patch_size
        if bundle is not None
        else SAM3_PATCH_SIZE
    )
    report.data = data_report(data.train, dataset.plan, inspection["splits"][0], data.resolution, patch)
    report.flags += data_flags(report.data)
    report.flags += negatives_flags(dataset.plan.num_negative, data, config.retention)
    return dataset


def _bound_queries(
    dataset: QueryDataset,
    config: TrainConfig,
    bundle: ModelBundle,
    device: torch.device,
    report: DoctorReport,
) -> QueryDataset | None:
    """The training dataset under the trainer's query bound on ``device``
    (:func:`~sam3tune.train.memory_ladder.bound_queries`): capped as training caps it (flagged, the step
    runs on the capped queries), or None where training refuses (flagged, no step: it would not fit)."""
    try:
        bounded, _, note = bound_queries(
            dataset,
            config,
            bundle.model.config,
            device_memory(device),
            "GPU" if device.type == "cuda" else f"{device.type.upper()} machine",
            uses_bf16(config.loop.amp, device),
            extra_queries_per_image(config, dataset),
        )
    except QueryBudgetError as err:
        report.flags.append(make_flag("queries_over_budget", str(err), severity="error"))
        return None
    if note:
        report.flags.append(make_flag("queries_over_budget", note))
    return bounded


def _first_batch(
    dataset: QueryDataset, config: TrainConfig, bundle: ModelBundle, report: DoctorReport
) -> Batch | None:
    """The first batch of epoch 0 in the trainer's order that holds at least one target object."""
    try:
        sampler = EpochBatchSampler(len(dataset), config.loop.batch_size, seed=config.loop.seed)
    except ValueError as err:
        report.flags.append(make_flag("data_unusable", str(err), fix="lower loop.batch_size or add images"))
        return None
    has_targets = [bool(q.positives) for q in dataset.plan.images]
    batches = list(sampler)
    number = next((i for i, b in enumerate(batches) if any(has_targets[j] for j in b)), 0)
    batch = collate([dataset[i] for i in batches[number]], tokenize=bundle.tokenize)
    report.batch = _summarise(batch, f"batch {number} of epoch 0 in training order")
    return batch


def _summarise(batch: Batch, description: str) -> BatchSummary:
    return BatchSummary(
        description=description,
        images=batch.num_images,
        queries=batch.num_queries,
        objects=sum(len(t["boxes"]) for t in batch.targets),
        image_ids=tuple(int(i) for i in batch.image_ids.tolist()),
    )


def _diagnose_step(
    report: DoctorReport,
    model: Sam3ForTraining,
    batch: Batch,
    config: TrainConfig,
    dataset_targets: int | None,
) -> None:
    """Target checks, parameter and learning-rate checks, then the watched step and the loss checks."""
    report.flags += target_flags(batch.targets, dataset_targets=dataset_targets)
    if report.parameters is None:
        report.parameters = model.parameter_table()
        report.flags += parameter_flags(model, config.model.finetune)
    optimizer = None
    if report.parameters[-1].trainable > 0:
        report.learning_rates = learning_rate_groups(model, config.optim)
        report.flags += learning_rate_flags(report.learning_rates)
        optimizer = build_optimizer(model, role_of, model.num_vit_blocks, config.optim)
    if "boxes_not_normalised" in report.codes():
        return  # the criterion refuses such boxes: no loss to show
    criterion = Sam3Criterion(config.loss)
    torch.manual_seed(config.loop.seed)
    try:
        probe = probe_training_step(
            model,
            criterion,
            batch,
            optimizer,
            bf16=uses_bf16(config.loop.amp, next(model.parameters()).device),
            max_grad_norm=config.optim.grad_clip_norm,
        )
    except ValueError as err:
        report.flags.append(make_flag("loss_failed", str(err)))
        return
    report.losses = loss_table(criterion, probe.result, batch.num_queries)
    report.flags += loss_flags(report.losses)
    report.expected = expected_total(probe.outputs, batch.targets, config.loss)
    report.flags += total_flags(report.losses.total, report.expected)
    report.flags += no_gradient_flags(probe.no_gradient)
    report.grad_norm = probe.grad_norm
    report.memory = probe.memory
