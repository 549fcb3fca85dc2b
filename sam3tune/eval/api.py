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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from sam3tune.config import ConfigError
from sam3tune.data import DataConfig, QueryDataset, QueryPlan, Tokenize, build_eval_dataset
from sam3tune.data.semantic import SemanticDataset, is_semantic_dataset
from sam3tune.devices import resolve_device
from sam3tune.eval.coco_results import check_results_against, load_coco_results, save_coco_results
from sam3tune.eval.config import EvalConfig, RetentionConfig
from sam3tune.eval.confusion import confusion_table
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
    eval_mode,
    eval_postprocess,
    module_forward,
    predict_batches,
    predict_sliced_plan,
    sample_loader,
    score_batches,
    score_module,
    score_predictions,
)
from sam3tune.eval.report import markdown_report, write_reports
from sam3tune.eval.retention import RetentionProbe, reference_objects, split_images
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
    retention: RetentionProbe | None = None,
) -> Callable[[nn.Module], dict[str, float]]:
    """``validate(model) -> {"bbox_AP": ..., "segm_cgF1": ..., ...}`` over an evaluation dataset: an
    evaluation :class:`~sam3tune.data.QueryDataset` (``build_eval_dataset``; its ground truth and loader,
    eval transforms and all negatives, are built once), or a semantic dataset (``{"mIoU": ...,
    "IoU/<class>": ...}``). The numbers are the metrics' summary without undefined (None) entries, ready
    for metric logs. With ``retention`` (its reference made by the starting model) they include
    ``retention_bbox_AP`` etc. (:mod:`sam3tune.eval.retention`)."""
    config = config or EvalConfig()
    if isinstance(dataset, SemanticDataset):
        return make_semantic_validator(
            dataset, tokenize, device, config.batch_size, config.max_queries_per_forward
        )
    gt = ground_truth_from_plan(dataset.plan)
    loader = eval_loader(dataset, tokenize, config)

    def validate(model: nn.Module) -> dict[str, float]:
        metrics, _ = score_module(model, loader, gt, config, device, progress)
        if retention is not None:
            with eval_mode(model):
                metrics.retention, _ = retention.measure(
                    module_forward(model), tokenize, dataset.config.resolution, config, device, progress
                )
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
    results, _ = predict_batches(
        runner.forward, loader, postprocess_config, device, progress, config.max_queries_per_forward
    )
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
    retention: RetentionConfig | None = None,
) -> tuple[EvalMetrics, EvalMetrics | None, str]:
    """Evaluate model spec ``model`` (and ``baseline``) on split ``data.val`` of ``data.root``.

    Every image is asked every queried category (negatives included) at the model's own input
    size. On a semantic dataset (label maps) the metrics are per-class IoU and mIoU instead
    (:func:`~sam3tune.eval.semantic_eval.evaluate_semantic_model`). Writes ``eval.json``, ``eval.md``
    and the COCO results (``predictions.json``,
    ``baseline_predictions.json``) to ``out_dir``; returns both metrics and the Markdown report.
    With ``config.exemplars.enabled`` the exemplar protocol runs too (``*_exemplar.json`` results,
    ``metrics.exemplar``). With ``retention`` enabled (it needs ``baseline``: the starting model), both
    are also asked the retention prompts and scored against the baseline's answers
    (``metrics.retention``, ``*_retention.json`` results; :mod:`sam3tune.eval.retention`), and the
    confusion tables count the baseline's retention detections as objects too.
    """
    config = config or EvalConfig()
    retention = retention if retention is not None and retention.enabled else None
    if is_semantic_dataset(data.root):  # label maps: mIoU per class instead of AP (SemanticMetrics)
        if retention is not None:
            raise ConfigError("retention.* applies to instance datasets; this one is semantic (label maps)")
        pieces = config.max_queries_per_forward
        batch = config.batch_size
        return evaluate_semantic_model(model, data, out_dir, baseline, device, batch, progress, pieces)
    if retention is not None and baseline is None:
        raise ConfigError(
            "retention.* needs baseline= (the model the run started from): its answers to the retention "
            "prompts are the reference"
        )
    out_dir = Path(out_dir)
    device = device or resolve_device("auto")
    scoring = _Scoring(data, out_dir, config, device, progress, retention)
    base_metrics = None
    if baseline is not None:
        log.info("evaluating baseline %s", baseline)
        base_metrics, _ = scoring.score(baseline, "baseline_predictions")
    log.info("evaluating %s", model)
    metrics, context = scoring.score(model, "predictions")
    context = {"model": model, **({"baseline": baseline} if baseline else {}), **context}
    verdict, label, base_label = None, model_label(model), model_label(baseline or "baseline")
    run = _run_against_its_start(model, baseline)
    if run is not None and base_metrics is not None:
        verdict = _verdict(run, metrics, base_metrics)
        label, base_label = "tuned", "zero-shot"
    write_reports(out_dir, metrics, label, base_metrics, base_label, context, verdict=verdict)
    return metrics, base_metrics, markdown_report(metrics, label, base_metrics, base_label, context, verdict)


@dataclass
class _Scoring:
    """How :func:`evaluate_model` scores each model: on split ``data.val``, results saved in ``out_dir``;
    with ``retention``, the first model scored (the baseline) makes the retention reference."""

    data: DataConfig
    out_dir: Path
    config: EvalConfig
    device: str | torch.device
    progress: bool
    retention: RetentionConfig | None = None
    probe: RetentionProbe | None = None

    def score(self, spec: str, stem: str) -> tuple[EvalMetrics, dict]:
        """The metrics of model ``spec`` (its COCO results saved as ``<stem>.json``, before scoring, and
        ``<stem>_exemplar.json`` / ``<stem>_retention.json``), and the report's context; the model is
        released after."""
        data, config, device, progress = self.data, self.config, self.device, self.progress
        runner = InferenceModel.load(spec, device=device)
        if config.exemplars.enabled:
            runner.require_pytorch("the exemplar protocol (exemplars.enabled: box prompts)")
        dataset = build_eval_dataset(
            dataclasses.replace(data, resolution=runner.image_size, masks=False), progress=progress
        )
        loader = eval_loader(dataset, runner.tokenize, config)
        gt = ground_truth_from_plan(dataset.plan)
        if config.postprocess.tiling.enabled:  # every whole image sliced, then scored as usual
            results, queried = predict_sliced_plan(
                runner, dataset.plan, eval_postprocess(config), progress, config.max_queries_per_forward
            )
            save_coco_results(results, self.out_dir / f"{stem}.json")
            metrics = score_predictions(results, queried, gt, config)
        else:
            metrics, results = score_batches(
                runner.forward,
                loader,
                gt,
                config,
                device,
                progress,
                on_predicted=lambda results: save_coco_results(results, self.out_dir / f"{stem}.json"),
            )
        if config.exemplars.enabled:
            metrics.exemplar, exemplar_results = _exemplar_protocol(
                runner, dataset, gt, list(metrics.coco), config, device, progress
            )
            save_coco_results(exemplar_results, self.out_dir / f"{stem}_exemplar.json")
        if self.retention is not None:
            self._retention(metrics, runner, dataset.plan, gt, results, stem)
        context = {
            "data": f"{data.root} (split {data.val}: {dataset.plan.split.annotation_file})",
            "input size": runner.image_size,
        }
        del runner, loader, dataset
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return metrics, context

    def _retention(
        self,
        metrics: EvalMetrics,
        runner: InferenceModel,
        plan: QueryPlan,
        gt: dict,
        results: list[dict],
        stem: str,
    ) -> None:
        """Retention metrics (the first model scored makes the reference) and the confusion table with
        the reference detections as objects."""
        model_args = {"tokenize": runner.tokenize, "resolution": runner.image_size}
        run_args = {"eval_config": self.config, "device": self.device, "progress": self.progress}
        reference_results = None
        if self.probe is None:
            self.probe, reference_results = RetentionProbe.build(
                self.retention,
                split_images(plan),
                runner.forward,
                tuned_prompts=[c.prompt for c in plan.categories.values()],
                default_split=self.data.val,
                **model_args,
                **run_args,
            )
        metrics.retention, retention_results = self.probe.measure(
            runner.forward, results=reference_results, **model_args, **run_args
        )
        save_coco_results(retention_results, self.out_dir / f"{stem}_retention.json")
        metrics.confusion = confusion_table(
            gt,
            results,
            self.config.specificity_score_threshold,
            extra_objects=reference_objects(self.probe.reference, {img["id"] for img in gt["images"]}),
        )


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
