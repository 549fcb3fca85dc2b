"""COCO box / mask AP, overall and per category, computed by faster-coco-eval.

AP is the standard COCO definition: precision interpolated at 101 recall points, averaged over IoU
thresholds 0.50:0.05:0.95, up to 100 detections per image and category, then averaged over the
categories that have ground truth.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from faster_coco_eval import COCO, COCOeval_faster

from sam3tune.eval.coco_results import ResultsError
from sam3tune.eval.ground_truth import ground_truth_for


@dataclass
class CocoMetrics:
    """COCO AP summary for one IoU type (``"bbox"`` or ``"segm"``); values in [0, 1].

    A value is None where it is undefined (no ground truth in that category / area range).
    ``per_category`` maps category name -> ``{"AP", "AP50", "AP75"}``.
    ``neutralised`` counts ground-truth objects without a mask that were turned into ignore
    regions for ``segm``.
    """

    iou_type: str
    AP: float | None
    AP50: float | None
    AP75: float | None
    APs: float | None
    APm: float | None
    APl: float | None
    AR100: float | None
    per_category: dict[str, dict[str, float | None]] = field(default_factory=dict)
    neutralised: int = 0


def coco_metrics(gt: dict, results: Sequence[dict], iou_type: str) -> CocoMetrics:
    """Evaluate COCO ``results`` against the COCO ground truth dict ``gt``.

    Args:
        gt: COCO ground truth (``images`` with ``height``/``width``, ``categories``, ``annotations``).
        results: COCO results entries (``image_id, category_id, bbox`` xywh, ``score`` and, for
            ``"segm"``, ``segmentation`` as compressed RLE). Neither argument is modified.
        iou_type: ``"bbox"`` or ``"segm"``.
    """
    prepared, neutralised = ground_truth_for(gt, iou_type)
    _check_results_fit(prepared, results, iou_type)
    coco_gt = COCO(prepared, print_function=_silent)
    coco_dt = coco_gt.loadRes(copy.deepcopy(list(results)))
    evaluator = COCOeval_faster(coco_gt, coco_dt, iouType=iou_type, print_function=_silent)
    evaluator.evaluate()
    evaluator.accumulate()

    params = evaluator.params
    precision = np.asarray(evaluator.eval["precision"])  # [T, R, K, A, M]
    recall = np.asarray(evaluator.eval["recall"])  # [T, K, A, M]
    thresholds = np.asarray(params.iouThrs)
    all_area = list(params.areaRngLbl).index("all")

    def ap(iou: float | None = None, area: str = "all", k: int | None = None) -> float | None:
        p = precision[:, :, :, list(params.areaRngLbl).index(area), -1]
        if iou is not None:
            p = p[np.isclose(thresholds, iou)]
        if k is not None:
            p = p[:, :, k]
        return _mean_defined(p)

    names = {c["id"]: c["name"] for c in prepared["categories"]}
    per_category = {
        names[cat_id]: {"AP": ap(k=k), "AP50": ap(0.5, k=k), "AP75": ap(0.75, k=k)}
        for k, cat_id in enumerate(params.catIds)
    }
    return CocoMetrics(
        iou_type=iou_type,
        AP=ap(),
        AP50=ap(0.5),
        AP75=ap(0.75),
        APs=ap(area="small"),
        APm=ap(area="medium"),
        APl=ap(area="large"),
        AR100=_mean_defined(recall[:, :, all_area, -1]),
        per_category=per_category,
        neutralised=neutralised,
    )


def _mean_defined(values: np.ndarray) -> float | None:
    """Mean over entries > -1 (COCO marks undefined entries with -1); None if there are none."""
    defined = values[values > -1]
    return float(defined.mean()) if defined.size else None


def _check_results_fit(gt: dict, results: Sequence[dict], iou_type: str) -> None:
    image_ids = {img["id"] for img in gt["images"]}
    category_ids = {cat["id"] for cat in gt["categories"]}
    for index, entry in enumerate(results):
        if entry["image_id"] not in image_ids:
            raise ResultsError(
                f"prediction {index} is for image_id {entry['image_id']}, which the ground truth lacks"
            )
        if entry["category_id"] not in category_ids:
            raise ResultsError(
                f"prediction {index} has category_id {entry['category_id']}, which the ground truth lacks"
            )
        if iou_type == "segm" and "segmentation" not in entry:
            raise ResultsError(f"prediction {index} has no segmentation; mask AP needs one per prediction")


def _silent(*_args: object) -> None:
    """faster-coco-eval prints progress through this; evaluation stays quiet."""
