"""The training parts of a semantic dataset (label maps): semantic datasets, the semantic criterion and
an mIoU validator, for the same loop as instance data (see :func:`sam3tune.train.recipe.train`)."""

from __future__ import annotations

import dataclasses
import logging
from functools import partial

from sam3tune.data import DataError, collate
from sam3tune.data.semantic import build_semantic_dataset
from sam3tune.eval.semantic_eval import make_semantic_validator
from sam3tune.loss.semantic_loss import SemanticCriterion
from sam3tune.model import ModelBundle, build_training_model
from sam3tune.train.config import TrainConfig
from sam3tune.train.distributed import DistributedContext
from sam3tune.train.loop import TrainingParts, uses_bf16
from sam3tune.train.memory_ladder import RungChoice, choose_rung
from sam3tune.train.param_groups import role_of

log = logging.getLogger(__name__)

_INSTANCE_DEFAULT_METRIC = "bbox_AP"


def semantic_training_parts(
    config: TrainConfig, context: DistributedContext, bundle: ModelBundle
) -> tuple[TrainingParts, TrainConfig, RungChoice]:
    """Parts for a semantic dataset: one query per (image, class), loss = the semantic criterion
    (``config.loss.semantic`` + the decoder's presence loss), validation = mIoU; the memory rung is
    chosen as for instance data, for ``batch_size`` images of every class. A ``val.best_metric`` left
    at the instance default becomes ``mIoU``. Returns the parts, the config used and the rung choice."""
    if config.data.shots is not None:
        raise DataError(
            "layout_invalid",
            f"data.shots={config.data.shots}: K-shot samples are drawn from instance labels (COCO, YOLO, "
            f"Hugging Face datasets); {config.data.root} is a semantic label-map dataset",
        )
    if config.val.best_metric == _INSTANCE_DEFAULT_METRIC:
        config = dataclasses.replace(config, val=dataclasses.replace(config.val, best_metric="mIoU"))
        log.info("semantic data: val.best_metric = mIoU")
    data = config.data
    train_dataset = build_semantic_dataset(
        data, data.train, train=True, seed=config.loop.seed, augment=config.loop.augment
    )
    queries = config.loop.batch_size * len(train_dataset.split.classes)
    choice = choose_rung(config, bundle.model.config, context.device, queries)
    config = choice.config
    if context.is_main:
        log.info("memory: %s", choice.reason)
    bf16 = uses_bf16(config.loop.amp, context.device)
    model = build_training_model(bundle, config.model, bf16_autocast=bf16)
    tokenize = bundle.tokenize
    val_dataset = None
    if config.val.every_epochs > 0:
        try:
            val_dataset = build_semantic_dataset(data, data.val, train=False)
        except DataError as err:
            if err.kind != "empty_split":
                raise
            log.warning("%s: training without validation (set data.val to a split to validate)", err)
    loss = config.loss
    criterion = SemanticCriterion(
        loss.semantic,
        loss.weights.presence_loss,
        loss.presence_alpha,
        loss.presence_gamma,
        loss.scale_by_find_batch_size,
    )
    evaluate = None
    if val_dataset is not None and config.val.map and context.is_main:
        evaluate = make_semantic_validator(val_dataset, tokenize, context.device, config.val.eval.batch_size)
    collate_fn = partial(collate, tokenize=tokenize)
    parts = TrainingParts(
        model=model,
        criterion=criterion,
        train_dataset=train_dataset,
        collate_fn=collate_fn,
        role_of=role_of,
        num_vit_blocks=model.num_vit_blocks,
        val_dataset=val_dataset,
        val_collate_fn=collate_fn,
        evaluate=evaluate,
        val_criterion=criterion,
    )
    return parts, config, choice
