"""What ``sam3tune eval`` does once its arguments are parsed."""

from __future__ import annotations

from pathlib import Path

from sam3tune.eval.coco_results import load_coco_results
from sam3tune.eval.config import EvalConfig
from sam3tune.eval.evaluate import EvalMetrics, evaluate_predictions
from sam3tune.eval.ground_truth import load_ground_truth
from sam3tune.eval.report import markdown_report, write_reports


def eval_predictions_file(
    predictions: str | Path,
    gt: str | Path,
    out_dir: str | Path,
    config: EvalConfig | None = None,
) -> tuple[EvalMetrics, str]:
    """Evaluate a COCO results file against a COCO annotation file; write ``eval.json``/``eval.md``.

    Returns the metrics and the Markdown report text.
    """
    ground_truth = load_ground_truth(gt)
    results = load_coco_results(predictions)
    metrics = evaluate_predictions(ground_truth, results, config)
    label = Path(predictions).name
    context = {"predictions": str(predictions), "ground truth": str(gt)}
    write_reports(out_dir, metrics, label, context=context)
    return metrics, markdown_report(metrics, label, context=context)
