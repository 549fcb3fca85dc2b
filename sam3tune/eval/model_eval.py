"""Run a model over a DataLoader of :class:`~sam3tune.data.Batch` and score it.

The model enters as ``forward(batch) -> outputs``: any callable returning the final-layer outputs
dict of ``docs/architecture.md`` for the batch's queries (in eval mode, no gradients needed).
This keeps the loop independent of how the model was loaded, so the train loop can call
:func:`score_module` for validation with its own model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import partial

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from sam3tune.data import Batch, QueryDataset, QueryPlan, Tokenize, collate
from sam3tune.eval.config import MAX_QUERIES_PER_FORWARD, EvalConfig, PostprocessConfig
from sam3tune.eval.evaluate import EvalMetrics, evaluate_predictions
from sam3tune.eval.inference import InferenceModel
from sam3tune.eval.postprocess import postprocess
from sam3tune.eval.sliced import predict_sliced
from sam3tune.progress import progress_bar

Forward = Callable[[Batch], dict[str, torch.Tensor]]


@torch.no_grad()
def predict_batches(
    forward: Forward,
    batches: Iterable[Batch],
    config: PostprocessConfig | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
    max_queries: int = MAX_QUERIES_PER_FORWARD,
) -> tuple[list[dict], set[tuple[int, int]]]:
    """COCO results (original image pixels) for every query of every batch, and the
    ``(image_id, category_id)`` pairs that were queried; at most ``max_queries`` queries per forward pass
    (:meth:`Batch.query_chunks`).

    Only the model inputs (``Batch.model_inputs``) are moved to ``device``; targets stay where they are.
    """
    results: list[dict] = []
    queried: set[tuple[int, int]] = set()
    pieces = (p for b in batches for p in b.query_chunks(max_queries))
    for batch in progress_bar(pieces, desc="predict", unit="batch", disable=not progress):
        inputs = dataclasses.replace(
            batch,
            **{
                key: value.to(device, non_blocking=True)
                for key, value in batch.model_inputs().items()
                if value is not None
            },
        )
        outputs = forward(inputs)
        rows = batch.image_index.tolist()
        sizes = [tuple(batch.orig_sizes[row].tolist()) for row in rows]
        detections = postprocess(outputs, sizes, config)
        for det, row, category_id in zip(detections, rows, batch.category_ids.tolist(), strict=True):
            image_id = int(batch.image_ids[row])
            queried.add((image_id, category_id))
            results.extend(det.to_coco_results(image_id, category_id))
    return results, queried


def score_batches(
    forward: Forward,
    batches: Iterable[Batch],
    gt: dict,
    config: EvalConfig | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
    on_predicted: Callable[[list[dict]], None] | None = None,
) -> tuple[EvalMetrics, list[dict]]:
    """All metrics of a model on the queries in ``batches``, scored against COCO ground truth ``gt``.
    ``on_predicted(results)`` is called with the COCO results before they are scored (``sam3tune eval``
    saves them there, so that a failure while scoring does not lose the model's work).

    ``batches`` must hold every (image, category) query of ``gt`` (an evaluation
    :class:`~sam3tune.data.QueryDataset` does: all negatives, eval transforms), and ``gt`` is
    typically :func:`~sam3tune.eval.ground_truth.ground_truth_from_plan` of the same plan.
    Returns the metrics and the COCO results they were computed from.
    """
    config = config or EvalConfig()
    results, queried = predict_batches(
        forward, batches, eval_postprocess(config), device, progress, config.max_queries_per_forward
    )
    if on_predicted is not None:
        on_predicted(results)
    return score_predictions(results, queried, gt, config), results


def eval_postprocess(config: EvalConfig) -> PostprocessConfig:
    """``config.postprocess`` with masks only when ``segm`` is evaluated."""
    return dataclasses.replace(
        config.postprocess, with_masks=config.postprocess.with_masks and "segm" in config.iou_types
    )


def predict_sliced_plan(
    runner: InferenceModel,
    plan: QueryPlan,
    config: PostprocessConfig,
    progress: bool = True,
    max_queries: int = MAX_QUERIES_PER_FORWARD,
) -> tuple[list[dict], set[tuple[int, int]]]:
    """COCO results and queried ``(image_id, category_id)`` pairs of every image of an evaluation ``plan``
    asked every queried category, each whole image predicted tile by tile
    (:func:`~sam3tune.eval.sliced.predict_sliced` with ``config.tiling``, at most ``max_queries`` queries
    per forward pass)."""
    categories = sorted(plan.categories)
    prompts = [plan.categories[c].prompt for c in categories]
    results: list[dict] = []
    queried: set[tuple[int, int]] = set()
    for query in progress_bar(plan.images, desc="predict sliced", unit="image", disable=not progress):
        image = query.image
        found = predict_sliced(runner, image.path, prompts, config, max_queries=max_queries)
        for category_id, prompt in zip(categories, prompts, strict=True):
            queried.add((image.image_id, category_id))
            results.extend(found[prompt].to_coco_results(image.image_id, category_id))
    return results, queried


def score_predictions(
    results: list[dict], queried: set[tuple[int, int]], gt: dict, config: EvalConfig
) -> EvalMetrics:
    """The metrics of COCO ``results`` for the ``queried`` (image, category) pairs against ``gt``."""
    expected = {(img["id"], cat["id"]) for img in gt["images"] for cat in gt["categories"]}
    unknown = sorted(queried - expected)
    if unknown:
        raise ValueError(
            f"{len(unknown)} queries are not in the ground truth, e.g. (image_id, category_id) {unknown[0]}; "
            "evaluate with the ground truth of the same split and categories"
        )
    metrics = evaluate_predictions(gt, results, config)
    missing = len(expected - queried)
    if missing:
        metrics.notes.append(f"{missing} (image, category) queries were not run; they count as no detection")
    return metrics


def score_module(
    model: nn.Module,
    batches: Iterable[Batch],
    gt: dict,
    config: EvalConfig | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> tuple[EvalMetrics, list[dict]]:
    """:func:`score_batches` for a module called as ``model(pixel_values, image_index, input_ids,
    attention_mask)`` (e.g. ``Sam3ForTraining``); it runs in eval mode and gets its mode back after.

    For validation in the train loop: ``score_module(model, loader, gt)[0].summary()``.
    """
    with eval_mode(model):
        return score_batches(module_forward(model), batches, gt, config, device, progress)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """``model`` in eval mode inside the block, its own mode again after."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def module_forward(model: nn.Module) -> Forward:
    """``forward(batch)`` of a module called with the batch's model inputs (e.g. ``Sam3ForTraining``)."""

    def forward(batch: Batch) -> dict[str, torch.Tensor]:
        return model(**batch.model_inputs())

    return forward


def eval_loader(dataset: QueryDataset, tokenize: Tokenize, config: EvalConfig) -> DataLoader:
    """Batches of every query of ``dataset``'s plan with eval transforms and no target masks
    (the metrics read :func:`~sam3tune.eval.ground_truth.ground_truth_from_plan` instead)."""
    inputs_only = QueryDataset(dataset.plan, dataclasses.replace(dataset.config, masks=False), train=False)
    return sample_loader(inputs_only, tokenize, config)


def sample_loader(samples: Dataset, tokenize: Tokenize, config: EvalConfig) -> DataLoader:
    """Batches of ``config.batch_size`` images of any dataset of :class:`~sam3tune.data.Sample`."""
    return DataLoader(
        samples,
        batch_size=config.batch_size,
        num_workers=config.num_workers,
        collate_fn=partial(collate, tokenize=tokenize),
    )
