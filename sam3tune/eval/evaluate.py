"""All evaluation metrics of a set of COCO results against COCO ground truth.

``evaluate_predictions`` is the model-free entry point (``sam3tune eval --predictions``);
:mod:`sam3tune.eval.model_eval` produces the results from a model and calls it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sam3tune.eval.cgf1 import CgF1Metrics, cgf1_metrics
from sam3tune.eval.coco_metrics import CocoMetrics, coco_metrics
from sam3tune.eval.config import EvalConfig
from sam3tune.eval.confusion import ConfusionTable, confusion_table
from sam3tune.eval.exemplar_protocol import ExemplarMetrics
from sam3tune.eval.retention import RetentionMetrics
from sam3tune.eval.specificity import SpecificityMetrics, specificity_metrics

log = logging.getLogger(__name__)

IOU_TYPES = ("bbox", "segm")


@dataclass
class EvalMetrics:
    """Everything ``sam3tune eval`` measures for one model.

    ``coco`` and ``cgf1`` are keyed by IoU type (``"bbox"``, ``"segm"``); ``notes`` lists what
    could not be evaluated and why; ``exemplar`` holds the exemplar protocol's AP when it ran;
    ``confusion``: which other category's objects each prompt's detections land on;
    ``retention``: the answers to untuned prompts against the starting model's (when measured).
    """

    coco: dict[str, CocoMetrics]
    cgf1: dict[str, CgF1Metrics]
    specificity: SpecificityMetrics
    images: int
    categories: int
    queries: int
    detections: int
    notes: list[str] = field(default_factory=list)
    exemplar: ExemplarMetrics | None = None
    confusion: ConfusionTable | None = None
    retention: RetentionMetrics | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (values in [0, 1], None where undefined)."""
        return dataclasses.asdict(self)

    def summary(self) -> dict[str, float | None]:
        """Headline numbers, flat: ``bbox_AP``, ``segm_AP50``, ``segm_cgF1``, ``false_fire_rate``, ..."""
        out: dict[str, float | None] = {}
        for iou_type, m in self.coco.items():
            out.update({f"{iou_type}_{k}": getattr(m, k) for k in ("AP", "AP50", "AP75")})
        for iou_type, m in self.cgf1.items():
            out.update(
                {
                    f"{iou_type}_cgF1": m.cgF1,
                    f"{iou_type}_IL_MCC": m.IL_MCC,
                    f"{iou_type}_positive_micro_F1": m.positive_micro_F1,
                }
            )
        out["false_fire_rate"] = self.specificity.false_fire_rate
        if self.exemplar is not None:
            for name, figures in (
                ("exemplar", self.exemplar.kept),
                ("exemplar_others", self.exemplar.others),
            ):
                for iou_type, m in figures.items():
                    out.update({f"{name}_{iou_type}_{k}": getattr(m, k) for k in ("AP", "AP50")})
        if self.retention is not None:
            out.update(self.retention.summary())
        return out


def evaluate_predictions(gt: dict, results: Sequence[dict], config: EvalConfig | None = None) -> EvalMetrics:
    """COCO AP, cgF1, prompt specificity and confusion of COCO ``results`` for every (image, category) query.

    Args:
        gt: COCO ground truth dict (see :mod:`sam3tune.eval.ground_truth`).
        results: COCO results entries; mask metrics need ``segmentation`` on every entry.
        config: thresholds and IoU types (defaults: :class:`EvalConfig`).
    """
    config = config or EvalConfig()
    unknown = sorted(set(config.iou_types) - set(IOU_TYPES))
    if unknown:
        raise ValueError(f"unknown IoU type(s) {unknown}; expected some of {list(IOU_TYPES)}")
    notes = []
    iou_types = list(config.iou_types)
    if "segm" in iou_types and any("segmentation" not in r for r in results):
        iou_types.remove("segm")
        notes.append("mask metrics skipped: some predictions have no segmentation")
    coco, cgf1 = {}, {}
    for iou_type in iou_types:
        coco[iou_type] = coco_metrics(gt, results, iou_type)
        cgf1[iou_type] = cgf1_metrics(gt, results, iou_type, config.cgf1_score_threshold)
        if coco[iou_type].neutralised:
            notes.append(
                f"{coco[iou_type].neutralised} objects without a mask were ignore regions for mask metrics"
            )
    for note in notes:
        log.warning(note)
    return EvalMetrics(
        coco=coco,
        cgf1=cgf1,
        specificity=specificity_metrics(gt, results, config.specificity_score_threshold),
        images=len(gt["images"]),
        categories=len(gt["categories"]),
        queries=len(gt["images"]) * len(gt["categories"]),
        detections=len(results),
        notes=notes,
        confusion=confusion_table(gt, results, config.specificity_score_threshold),
    )
