"""What training does differently for each kind of dataset.

``instance`` data (COCO, Roboflow, YOLO: boxes and masks per object) and ``semantic`` data (label maps:
one mask per class and image, ``docs/semantic.md``) run through the same recipe
(:func:`sam3tune.train.recipe.build_training_parts`); a kind supplies only its datasets, how many
queries a step holds (for the memory rung) and its criterion; validation is
:func:`sam3tune.eval.api.make_validator` of the validation dataset, whatever its kind.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from sam3tune.data import (
    DataError,
    QueryDataset,
    build_eval_dataset,
    build_train_dataset,
    check_prompt_tokens,
)
from sam3tune.data.semantic import SemanticDataset, build_semantic_dataset, is_semantic_dataset
from sam3tune.loss import Sam3Criterion
from sam3tune.loss.semantic_loss import SemanticCriterion
from sam3tune.train.config import TrainConfig, ValidationConfig
from sam3tune.train.memory_ladder import queries_per_step

log = logging.getLogger(__name__)

Tokenize = Callable[[list[str]], Any]


def training_dataset(config: TrainConfig, tokenize: Tokenize | None, *, progress: bool) -> QueryDataset:
    """The training dataset of instance data ``config.data`` as the trainer reads it (``loop.seed``,
    ``loop.augment``); with ``tokenize``, prompts the tokenizer cuts to equal ids are refused
    (``DataError``)."""
    dataset = build_train_dataset(
        config.data, seed=config.loop.seed, progress=progress, augment=config.loop.augment
    )
    if tokenize is not None:
        check_prompt_tokens(dataset.plan, tokenize, str(dataset.plan.split.annotation_file))
    return dataset


class InstanceData:
    """Objects with boxes (and masks): one query per (image, category), the official SAM 3 criterion,
    COCO AP / cgF1 validation."""

    name = "instance"

    def prepare(self, config: TrainConfig) -> TrainConfig:
        return config

    def uses_exemplars(self, config: TrainConfig) -> bool:
        return config.data.exemplars.enabled

    def train_dataset(self, config: TrainConfig, tokenize: Tokenize, progress: bool) -> QueryDataset:
        return training_dataset(config, tokenize, progress=progress)

    def val_dataset(self, config: TrainConfig, tokenize: Tokenize, progress: bool) -> QueryDataset:
        dataset = build_eval_dataset(config.data, progress=progress)
        check_prompt_tokens(dataset.plan, tokenize, str(dataset.plan.split.annotation_file))
        return dataset

    def queries_per_step(self, dataset: QueryDataset, batch_size: int) -> int:
        return queries_per_step(dataset, batch_size)

    def criterion(self, config: TrainConfig) -> nn.Module:
        return Sam3Criterion(config.loss)

    def val_criterion(self, config: TrainConfig) -> nn.Module:
        """The criterion of the validation loss: normalised per process (no all-reduce in validation)."""
        return Sam3Criterion(dataclasses.replace(config.loss, normalization="local"))


class SemanticData:
    """Label maps: one query per (image, class) whose target is the class's pixels, the semantic criterion
    (``config.loss.semantic`` + the decoder's presence loss), mIoU validation."""

    name = "semantic"

    def prepare(self, config: TrainConfig) -> TrainConfig:
        """A ``val.best_metric`` left at the instance default becomes ``mIoU``; ``data.shots`` is refused
        (K-shot samples are drawn from instance labels)."""
        if config.data.shots is not None:
            raise DataError(
                "layout_invalid",
                f"data.shots={config.data.shots}: K-shot samples are drawn from instance labels (COCO, YOLO, "
                f"Hugging Face datasets); {config.data.root} is a semantic label-map dataset",
            )
        if config.val.best_metric != ValidationConfig().best_metric:
            return config
        log.info("semantic data: val.best_metric = mIoU")
        return dataclasses.replace(config, val=dataclasses.replace(config.val, best_metric="mIoU"))

    def uses_exemplars(self, config: TrainConfig) -> bool:
        return False

    def train_dataset(self, config: TrainConfig, tokenize: Tokenize, progress: bool) -> SemanticDataset:
        data = config.data
        return build_semantic_dataset(
            data, data.train, train=True, seed=config.loop.seed, augment=config.loop.augment
        )

    def val_dataset(self, config: TrainConfig, tokenize: Tokenize, progress: bool) -> SemanticDataset:
        return build_semantic_dataset(config.data, config.data.val, train=False)

    def queries_per_step(self, dataset: SemanticDataset, batch_size: int) -> int:
        return batch_size * len(dataset.split.classes)

    def criterion(self, config: TrainConfig) -> nn.Module:
        loss = config.loss
        return SemanticCriterion(
            loss.semantic,
            loss.weights.presence_loss,
            loss.presence_alpha,
            loss.presence_gamma,
            loss.scale_by_find_batch_size,
        )

    def val_criterion(self, config: TrainConfig) -> nn.Module:
        return self.criterion(config)


DatasetKind = InstanceData | SemanticData


def dataset_kind(root: str | Path | None) -> DatasetKind:
    """The kind of the dataset at ``root``: semantic when it holds ``semantic.yaml``, else instance."""
    return SemanticData() if is_semantic_dataset(root) else InstanceData()
