"""``sam3tune eval``: evaluate a model (and a baseline) on a dataset split, or a COCO results file."""

from __future__ import annotations

import dataclasses
import gc
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import yaml

from sam3tune.config import ConfigError, load_config, with_shortcuts
from sam3tune.data import DataConfig, DataError, QueryDataset, build_eval_dataset
from sam3tune.data.semantic import is_semantic_dataset
from sam3tune.devices import resolve_device
from sam3tune.eval.coco_results import (
    ResultsError,
    check_results_against,
    load_coco_results,
    save_coco_results,
)
from sam3tune.eval.config import EvalConfig, EvalRunConfig
from sam3tune.eval.evaluate import EvalMetrics, evaluate_predictions
from sam3tune.eval.exemplar_protocol import (
    ExemplarMetrics,
    ExemplarQueries,
    choose_exemplars,
    exemplar_metrics,
)
from sam3tune.eval.ground_truth import (
    GroundTruthError,
    ground_truth_from_plan,
    load_ground_truth,
    without_unasked_categories,
)
from sam3tune.eval.model_eval import (
    eval_loader,
    eval_postprocess,
    evaluate_model,
    predict_batches,
    predict_sliced_plan,
    sample_loader,
    score_predictions,
)
from sam3tune.eval.report import markdown_report, write_reports
from sam3tune.eval.semantic_eval import eval_semantic_model
from sam3tune.eval.verdict import Verdict, verdict_from_metrics
from sam3tune.output_files import WriteError, claim_output_folder

if TYPE_CHECKING:
    from sam3tune.predict import Predictor

log = logging.getLogger(__name__)

#: What ``sam3tune eval`` writes in its ``--out`` folder (``--overwrite`` replaces exactly these).
OUTPUTS = (
    "eval.json",
    "eval.md",
    "predictions.json",
    "baseline_predictions.json",
    "predictions_exemplar.json",
    "baseline_predictions_exemplar.json",
)


def run_eval_command(
    config: str | None = None,
    overrides: Sequence[str] = (),
    model: str | None = None,
    data: str | None = None,
    predictions: Path | None = None,
    gt: Path | None = None,
    out: Path = Path("eval"),
    overwrite: bool = False,
) -> int:
    """:class:`EvalRunConfig` from the ``config`` file, ``key=value`` overrides, then ``model`` / ``data``
    (which set ``model`` / ``data.root``); evaluate the model (and ``baseline``) on split ``data.val``, or
    the COCO results file ``predictions`` against ``gt``; print the report and write it to ``out`` (a
    folder holding an earlier report is refused unless ``overwrite``, checked before any model runs).
    Exit status 0, or 2 for bad input (message on stderr)."""
    try:
        settings = load_config(
            EvalRunConfig, config, with_shortcuts(overrides, {"model": model, "data.root": data})
        )
        if predictions is not None or gt is not None:
            if predictions is None or gt is None or settings.model or settings.baseline:
                raise ConfigError("--predictions needs --gt, and neither goes with a model or a baseline")
            claim_output_folder(out, OUTPUTS, overwrite)
            _, markdown = eval_predictions_file(predictions, gt, out, settings)
        elif settings.model is None or settings.data.root is None:
            raise ConfigError("give --model and --data (model=..., data.root=...), or --predictions and --gt")
        else:
            device = resolve_device(settings.device, key="device")
            claim_output_folder(out, OUTPUTS, overwrite)
            _, _, markdown = eval_model(
                settings.model, settings.data, out, settings, baseline=settings.baseline, device=device
            )
    except (ConfigError, DataError, ResultsError, GroundTruthError, FileNotFoundError, WriteError) as err:
        print(f"sam3tune eval: {err}", file=sys.stderr)
        return 2
    print(markdown)
    print(f"reports written to {out}/eval.json and {out}/eval.md")
    return 0


def eval_predictions_file(
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
    predictor: Predictor,
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
    loader = sample_loader(queries, predictor.tokenize, config)
    postprocess_config = dataclasses.replace(config.postprocess, with_masks="segm" in iou_types)
    results, _ = predict_batches(predictor.forward, loader, postprocess_config, device, progress)
    metrics = exemplar_metrics(
        gt, results, prompts, iou_types, protocol.exclude_iou, protocol.seed, protocol.keep_text
    )
    return metrics, results


def eval_model(
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
    (:func:`~sam3tune.eval.semantic_eval.eval_semantic_model`). Writes ``eval.json``, ``eval.md``
    and the COCO results (``predictions.json``,
    ``baseline_predictions.json``) to ``out_dir``; returns both metrics and the Markdown report.
    With ``config.exemplars.enabled`` the exemplar protocol runs too (``*_exemplar.json`` results,
    ``metrics.exemplar``).
    """
    from sam3tune.predict import Predictor  # the model package is heavy; load it only here

    config = config or EvalConfig()
    if is_semantic_dataset(data.root):  # label maps: mIoU per class instead of AP (SemanticMetrics)
        return eval_semantic_model(model, data, out_dir, baseline, device, config.batch_size, progress)
    out_dir = Path(out_dir)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")

    def run(spec: str, stem: str) -> tuple[EvalMetrics, dict]:
        predictor = Predictor.load(spec, config=config.postprocess, device=device)
        dataset = build_eval_dataset(
            dataclasses.replace(data, resolution=predictor.image_size, masks=False), progress=progress
        )
        loader = eval_loader(dataset, predictor.tokenize, config)
        gt = ground_truth_from_plan(dataset.plan)
        if config.postprocess.tiling.enabled:  # sliced prediction of every whole image, scored as usual
            predictor.config = eval_postprocess(config)
            results, queried = predict_sliced_plan(predictor.predict, dataset.plan, progress)
            save_coco_results(results, out_dir / f"{stem}.json")
            metrics = score_predictions(results, queried, gt, config)
        else:
            metrics, _ = evaluate_model(
                predictor.forward,
                loader,
                gt,
                config,
                device,
                progress,
                on_predicted=lambda results: save_coco_results(results, out_dir / f"{stem}.json"),
            )
        if config.exemplars.enabled:
            metrics.exemplar, exemplar_results = _exemplar_protocol(
                predictor, dataset, gt, list(metrics.coco), config, device, progress
            )
            save_coco_results(exemplar_results, out_dir / f"{stem}_exemplar.json")
        context = {
            "data": f"{data.root} (split {data.val}: {dataset.plan.split.annotation_file})",
            "input size": predictor.image_size,
        }
        del predictor, loader, dataset
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return metrics, context

    base_metrics = None
    if baseline is not None:
        log.info("evaluating baseline %s", baseline)
        base_metrics, _ = run(baseline, "baseline_predictions")
    log.info("evaluating %s", model)
    metrics, context = run(model, "predictions")
    context = {"model": model, **({"baseline": baseline} if baseline else {}), **context}
    verdict = None
    if base_metrics is not None and baseline is not None:
        verdict = run_verdict(model, baseline, metrics, base_metrics)
    label = baseline or "baseline"
    write_reports(out_dir, metrics, model, base_metrics, label, context, verdict=verdict)
    return metrics, base_metrics, markdown_report(metrics, model, base_metrics, label, context, verdict)


def run_verdict(model: str, baseline: str, tuned: EvalMetrics, zero_shot: EvalMetrics) -> Verdict | None:
    """The zero-shot verdict when ``model`` is a training run's exported model (``RUN_DIR/model``) and
    ``baseline`` the model that run started from (its ``model.name``); on the run's ``val.best_metric``
    (``bbox_AP`` when that is a loss, which evaluation does not compute). None otherwise."""
    config_file = Path(model).parent / "config.yaml"
    if not config_file.is_file():
        return None
    run = yaml.safe_load(config_file.read_text()) or {}
    started_from = str((run.get("model") or {}).get("name"))
    if not _same_model(started_from, baseline):
        return None
    val = run.get("val") or {}
    metric, mode = val.get("best_metric", "bbox_AP"), val.get("best_mode", "max")
    if metric not in tuned.summary():
        metric, mode = "bbox_AP", "max"
    return verdict_from_metrics(tuned, zero_shot, metric, mode)


def _same_model(a: str, b: str) -> bool:
    """The same model spec: equal strings, or paths of the same existing directory."""
    if a == b:
        return True
    return Path(a).exists() and Path(b).exists() and Path(a).resolve() == Path(b).resolve()
