"""``sam3tune eval``: evaluate a model (and a baseline) on a dataset split, or a COCO results file."""

from __future__ import annotations

import dataclasses
import gc
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from sam3tune.config import ConfigError, load_config, with_shortcuts
from sam3tune.data import DataConfig, DataError, build_eval_dataset
from sam3tune.devices import resolve_device
from sam3tune.eval.coco_results import (
    ResultsError,
    check_results_against,
    load_coco_results,
    save_coco_results,
)
from sam3tune.eval.config import EvalConfig, EvalRunConfig
from sam3tune.eval.evaluate import EvalMetrics, evaluate_predictions
from sam3tune.eval.ground_truth import (
    GroundTruthError,
    ground_truth_from_plan,
    load_ground_truth,
    without_unasked_categories,
)
from sam3tune.eval.model_eval import eval_loader, evaluate_model
from sam3tune.eval.report import markdown_report, write_reports
from sam3tune.output_files import WriteError, claim_output_folder

log = logging.getLogger(__name__)

#: What ``sam3tune eval`` writes in its ``--out`` folder (``--overwrite`` replaces exactly these).
OUTPUTS = ("eval.json", "eval.md", "predictions.json", "baseline_predictions.json")


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
    size. Writes ``eval.json``, ``eval.md`` and the COCO results (``predictions.json``,
    ``baseline_predictions.json``) to ``out_dir``; returns both metrics and the Markdown report.
    """
    from sam3tune.predict import Predictor  # the model package is heavy; load it only here

    config = config or EvalConfig()
    out_dir = Path(out_dir)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")

    def run(spec: str, stem: str) -> tuple[EvalMetrics, dict]:
        predictor = Predictor.load(spec, config=config.postprocess, device=device)
        dataset = build_eval_dataset(
            dataclasses.replace(data, resolution=predictor.image_size, masks=False), progress=progress
        )
        loader = eval_loader(dataset, predictor.tokenize, config)
        gt = ground_truth_from_plan(dataset.plan)
        metrics, _ = evaluate_model(
            predictor.forward,
            loader,
            gt,
            config,
            device,
            progress,
            on_predicted=lambda results: save_coco_results(results, out_dir / f"{stem}.json"),
        )
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
    write_reports(out_dir, metrics, model, base_metrics, baseline or "baseline", context)
    return (
        metrics,
        base_metrics,
        markdown_report(metrics, model, base_metrics, baseline or "baseline", context),
    )
