"""Evaluation as a library: the three entry points of ``sam3tune.eval``.

- :func:`evaluate_results_file`: score a COCO results file against COCO ground truth (no model);
- :func:`evaluate_model`: run a model spec (and a baseline) on a dataset split and score it (COCO AP,
  cgF1, specificity; mIoU for label maps), writing the reports;
- :func:`make_validator`: ``validate(module) -> metrics`` over a validation dataset, for the train loop.

``sam3tune eval`` (``command.py``) is these with a command line; the demo and the benchmarks call them.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from sam3tune.data import DataConfig, QueryDataset, Tokenize, build_eval_dataset
from sam3tune.data.semantic import SemanticDataset, is_semantic_dataset
from sam3tune.devices import resolve_device
from sam3tune.eval.coco_results import check_results_against, load_coco_results, save_coco_results
from sam3tune.eval.config import EvalConfig
from sam3tune.eval.evaluate import EvalMetrics, evaluate_predictions
from sam3tune.eval.exemplar_protocol import (
    ExemplarMetrics,
    ExemplarQueries,
    choose_exemplars,
    exemplar_metrics,
)
from sam3tune.eval.ground_truth import ground_truth_from_plan, load_ground_truth, without_unasked_categories
from sam3tune.eval.inference import InferenceModel
from sam3tune.eval.model_eval import (
    eval_loader,
    eval_postprocess,
    predict_batches,
    predict_sliced_plan,
    sample_loader,
    score_batches,
    score_module,
    score_predictions,
)
from sam3tune.eval.report import markdown_report, write_reports
from sam3tune.eval.semantic_eval import evaluate_semantic_model, make_semantic_validator
from sam3tune.eval.verdict import Verdict, verdict_from_metrics
from sam3tune.model.hub import model_label
from sam3tune.run_dir import RunDir

if TYPE_CHECKING:
    from sam3tune.train.config import TrainConfig

log = logging.getLogger(__name__)


def make_validator(
    dataset: QueryDataset | SemanticDataset,
    tokenize: Tokenize,
    config: EvalConfig | None = None,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> Callable[[nn.Module], dict[str, float]]:
    """``validate(model) -> {"bbox_AP": ..., "segm_cgF1": ..., ...}`` over an evaluation dataset: an
    evaluation :class:`~sam3tune.data.QueryDataset` (``build_eval_dataset``; its ground truth and loader,
    eval transforms and all negatives, are built once), or a semantic dataset (``{"mIoU": ...,
    "IoU/<class>": ...}``). The numbers are the metrics' summary without undefined (None) entries, ready
    for metric logs."""
    config = config or EvalConfig()
    if isinstance(dataset, SemanticDataset):
        return make_semantic_validator(dataset, tokenize, device, config.batch_size)
    gt = ground_truth_from_plan(dataset.plan)
    loader = eval_loader(dataset, tokenize, config)

    def validate(model: nn.Module) -> dict[str, float]:
        metrics, _ = score_module(model, loader, gt, config, device, progress)
        return {key: value for key, value in metrics.summary().items() if value is not None}

    return validate


def evaluate_results_file(
    predictions: str | Path,
    gt: str | Path,
    out_dir: str | Path,
    config: EvalConfig | None = None,
) -> tuple[EvalMetrics, str]:
    """Evaluate a COCO results file against a COCO annotation file; write ``eval.json``/``eval.md``.

    Every image is taken to have been asked every category that has an annotation or a prediction.

    Returns the metrics and the Markdown report text.
    """
    ground_truth = load_ground_truth(gt)
    results = load_coco_results(predictions)
    check_results_against(results, ground_truth, predictions)
    ground_truth, unasked = without_unasked_categories(ground_truth, results)
    metrics = evaluate_predictions(ground_truth, results, config)
    if unasked:
        metrics.notes.append(f"categories without annotations or predictions left out: {', '.join(unasked)}")
    label = Path(predictions).name
    context = {"predictions": str(predictions), "ground truth": str(gt)}
    write_reports(out_dir, metrics, label, context=context)
    return metrics, markdown_report(metrics, label, context=context)


def _exemplar_protocol(
    runner: InferenceModel,
    dataset: QueryDataset,
    gt: dict,
    iou_types: list[str],
    config: EvalConfig,
    device: str | torch.device,
    progress: bool,
) -> tuple[ExemplarMetrics, list[dict]]:
    """The exemplar protocol's metrics and COCO results for one model (see ``exemplar_protocol``)."""
    protocol = config.exemplars
    prompts = choose_exemplars(dataset.plan, protocol.seed)
    queries = ExemplarQueries(dataset, prompts, keep_text=protocol.keep_text)
    loader = sample_loader(queries, runner.tokenize, config)
    postprocess_config = dataclasses.replace(config.postprocess, with_masks="segm" in iou_types)
    results, _ = predict_batches(runner.forward, loader, postprocess_config, device, progress)
    metrics = exemplar_metrics(
        gt, results, prompts, iou_types, protocol.exclude_iou, protocol.seed, protocol.keep_text
    )
    return metrics, results


def evaluate_model(
    model: str,
    data: DataConfig,
    out_dir: str | Path,
    config: EvalConfig | None = None,
    baseline: str | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> tuple[EvalMetrics, EvalMetrics | None, str]:
    """Evaluate model spec ``model`` (and ``baseline``) on split ``data.val`` of ``data.root``.

    Every image is asked every queried category (negatives included) at the model's own input
    size. On a semantic dataset (label maps) the metrics are per-class IoU and mIoU instead
    (:func:`~sam3tune.eval.semantic_eval.evaluate_semantic_model`). Writes ``eval.json``, ``eval.md``
    and the COCO results (``predictions.json``,
    ``baseline_predictions.json``) to ``out_dir``; returns both metrics and the Markdown report.
    With ``config.exemplars.enabled`` the exemplar protocol runs too (``*_exemplar.json`` results,
    ``metrics.exemplar``).
    """
    config = config or EvalConfig()
    if is_semantic_dataset(data.root):  # label maps: mIoU per class instead of AP (SemanticMetrics)
        return evaluate_semantic_model(model, data, out_dir, baseline, device, config.batch_size, progress)
    out_dir = Path(out_dir)
    device = device or resolve_device("auto")
    base_metrics = None
    if baseline is not None:
        log.info("evaluating baseline %s", baseline)
        stem = "baseline_predictions"
        base_metrics, _ = _score_model(baseline, stem, data, out_dir, config, device, progress)
    log.info("evaluating %s", model)
    metrics, context = _score_model(model, "predictions", data, out_dir, config, device, progress)
    context = {"model": model, **({"baseline": baseline} if baseline else {}), **context}
    verdict, label, base_label = None, model_label(model), model_label(baseline or "baseline")
    run = _run_against_its_start(model, baseline)
    if run is not None and base_metrics is not None:
        verdict = _verdict(run, metrics, base_metrics)
        label, base_label = "tuned", "zero-shot"
    write_reports(out_dir, metrics, label, base_metrics, base_label, context, verdict=verdict)
    return metrics, base_metrics, markdown_report(metrics, label, base_metrics, base_label, context, verdict)


def _score_model(
    spec: str,
    stem: str,
    data: DataConfig,
    out_dir: Path,
    config: EvalConfig,
    device: str | torch.device,
    progress: bool,
) -> tuple[EvalMetrics, dict]:
    """The metrics of model ``spec`` on split ``data.val`` (its COCO results saved as ``<stem>.json``,
    before scoring, and ``<stem>_exemplar.json``), and the report's context; the model is released
    after."""
    runner = InferenceModel.load(spec, device=device)
    dataset = build_eval_dataset(
        dataclasses.replace(data, resolution=runner.image_size, masks=False), progress=progress
    )
    loader = eval_loader(dataset, runner.tokenize, config)
    gt = ground_truth_from_plan(dataset.plan)
    if config.postprocess.tiling.enabled:  # every whole image sliced, then scored as usual
        results, queried = predict_sliced_plan(runner, dataset.plan, eval_postprocess(config), progress)
        save_coco_results(results, out_dir / f"{stem}.json")
        metrics = score_predictions(results, queried, gt, config)
    else:
        metrics, _ = score_batches(
            runner.forward,
            loader,
            gt,
            config,
            device,
            progress,
            on_predicted=lambda results: save_coco_results(results, out_dir / f"{stem}.json"),
        )
    if config.exemplars.enabled:
        metrics.exemplar, exemplar_results = _exemplar_protocol(
            runner, dataset, gt, list(metrics.coco), config, device, progress
        )
        save_coco_results(exemplar_results, out_dir / f"{stem}_exemplar.json")
    context = {
        "data": f"{data.root} (split {data.val}: {dataset.plan.split.annotation_file})",
        "input size": runner.image_size,
    }
    del runner, loader, dataset
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return metrics, context


def _run_against_its_start(model: str, baseline: str | None) -> TrainConfig | None:
    """The run's config when ``model`` is a training run's exported model (``RUN_DIR/model``) and
    ``baseline`` the model that run started from (its ``model.name``); None otherwise."""
    run = RunDir.of_model(model)
    if run is None or baseline is None:
        return None
    config = run.config()
    return config if _same_model(config.model.name, baseline) else None


def _verdict(run: TrainConfig, tuned: EvalMetrics, zero_shot: EvalMetrics) -> Verdict | None:
    """The zero-shot verdict on the run's ``val.best_metric`` (the default metric when that is a loss,
    which evaluation does not compute)."""
    if run.val.best_metric not in tuned.summary():
        return verdict_from_metrics(tuned, zero_shot)
    return verdict_from_metrics(tuned, zero_shot, run.val.best_metric, run.val.best_mode)


def _same_model(a: str, b: str) -> bool:
    """The same model spec: equal strings, or paths of the same existing directory."""
    if a == b:
        return True
    return Path(a).exists() and Path(b).exists() and Path(a).resolve() == Path(b).resolve()
