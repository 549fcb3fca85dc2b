"""Evaluation: postprocessing to COCO results, COCO AP, SAM 3's cgF1, prompt specificity, reports."""

from sam3tune.eval.config import EvalConfig, PostprocessConfig
from sam3tune.eval.evaluate import EvalMetrics, evaluate_predictions
from sam3tune.eval.postprocess import Detections, postprocess

__all__ = [
    "Detections",
    "EvalConfig",
    "EvalMetrics",
    "PostprocessConfig",
    "evaluate_predictions",
    "postprocess",
]
