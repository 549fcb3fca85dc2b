"""SAM 3's classification-gated F1 (cgF1), from the SAM 3 paper's definition.

Each (image, prompt) pair is one unit. With the detections scoring >= ``score_threshold``:

* Image level: a pair is a TP if it has ground truth and at least one detection, FN with ground
  truth and none, FP without ground truth but with detections, TN with neither. IL_MCC is the
  Matthews correlation of these four counts.
* Instance level, per IoU threshold t in 0.50:0.05:0.95: in each pair the detections and objects
  are matched one-to-one by the Hungarian algorithm maximising the total IoU (crowd objects are
  left out), and a matched couple with IoU >= t is a true positive. FN counts every unmatched
  object in every pair; the *positive* FP counts unmatched detections only in pairs that have
  ground truth and detections (false fires on negative pairs are the image-level metric's job).
  positive_micro_F1 = F1 of (sum TP, sum positive FP, sum FN).
* cgF1 = positive_micro_F1 x IL_MCC, averaged over the ten IoU thresholds (also reported at
  0.5 and 0.75).

The small smoothing constants (1e-4 at instance level, 1e-6 at image level) are those of Meta's
reference evaluator ``sam3.eval.cgf1_eval``, so that values agree with published numbers.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from faster_coco_eval.core import mask as coco_mask
from scipy.optimize import linear_sum_assignment

from sam3tune.eval.ground_truth import ground_truth_for
from sam3tune.eval.rle import annotation_rle

IOU_THRESHOLDS = np.linspace(0.5, 0.95, round((0.95 - 0.5) / 0.05) + 1)
_EPS = 1e-4  # instance-level smoothing
_IL_EPS = 1e-6  # image-level smoothing


@dataclass
class CgF1Metrics:
    """cgF1 and its parts for one IoU type; ``values`` holds every metric by name.

    Names without a suffix average over IoU 0.50:0.95; ``@0.5`` / ``@0.75`` are at one threshold.
    Instance-level names: cgF1, precision, recall, F1, positive_micro_F1, positive_micro_precision,
    positive_macro_F1; image-level names: IL_precision, IL_recall, IL_F1, IL_FPR, IL_MCC.
    ``pairs`` counts the (image, prompt) pairs by image-level outcome (TP, FP, TN, FN).
    """

    iou_type: str
    score_threshold: float
    cgF1: float
    IL_MCC: float
    positive_micro_F1: float
    values: dict[str, float | None] = field(default_factory=dict)
    pairs: dict[str, int] = field(default_factory=dict)


def cgf1_metrics(
    gt: dict,
    results: Sequence[dict],
    iou_type: str,
    score_threshold: float = 0.5,
    pairs: Iterable[tuple[int, int]] | None = None,
) -> CgF1Metrics:
    """cgF1 of COCO ``results`` against COCO ground truth ``gt``.

    Args:
        gt: COCO ground truth dict; every image is paired with every category (the prompts that
            were asked), unless ``pairs`` says otherwise.
        results: COCO results entries; ``segmentation`` (RLE) is needed for ``"segm"``.
        iou_type: ``"bbox"`` or ``"segm"``.
        score_threshold: detections below it are discarded.
        pairs: the ``(image_id, category_id)`` pairs to score (default: all of them).
    """
    prepared, _ = ground_truth_for(gt, iou_type)
    sizes = {img["id"]: (img["height"], img["width"]) for img in prepared["images"]}
    if pairs is None:
        pairs = [(img["id"], cat["id"]) for img in prepared["images"] for cat in prepared["categories"]]
    objects: dict[tuple[int, int], list[dict]] = defaultdict(list)
    for ann in prepared["annotations"]:
        if not ann["iscrowd"]:
            objects[ann["image_id"], ann["category_id"]].append(ann)
    detections: dict[tuple[int, int], list[dict]] = defaultdict(list)
    for entry in results:
        if entry["score"] >= score_threshold:
            detections[entry["image_id"], entry["category_id"]].append(entry)

    n_thr = len(IOU_THRESHOLDS)
    tp, fp, positive_fp, fn = (np.zeros(n_thr, dtype=np.int64) for _ in range(4))
    local_f1_sum, local_f1_count = np.zeros(n_thr), 0
    outcome = {"TP": 0, "FP": 0, "TN": 0, "FN": 0}
    for pair in pairs:
        gts, dts = objects.get(pair, []), detections.get(pair, [])
        if not gts and not dts:
            outcome["TN"] += 1
        elif not dts:
            outcome["FN"] += 1
            fn += len(gts)
        elif not gts:
            outcome["FP"] += 1
            fp += len(dts)
        else:
            outcome["TP"] += 1
            ious = _iou_matrix(dts, gts, iou_type, sizes[pair[0]])
            rows, cols = linear_sum_assignment(-ious)
            matched = ious[rows, cols]
            pair_tp = np.array([(matched >= t).sum() for t in IOU_THRESHOLDS], dtype=np.int64)
            pair_fp, pair_fn = len(dts) - pair_tp, len(gts) - pair_tp
            tp += pair_tp
            fp += pair_fp
            positive_fp += pair_fp
            fn += pair_fn
            local_f1_sum += _f1(_ratio(pair_tp, pair_tp + pair_fp), _ratio(pair_tp, pair_tp + pair_fn))
            local_f1_count += 1

    precision = _ratio(tp, tp + fp)
    positive_precision = _ratio(tp, tp + positive_fp)
    recall = _ratio(tp, tp + fn)
    per_threshold = {
        "precision": precision,
        "recall": recall,
        "F1": _f1(precision, recall),
        "positive_micro_precision": positive_precision,
        "positive_micro_F1": _f1(positive_precision, recall),
        "positive_macro_F1": local_f1_sum / local_f1_count if local_f1_count else None,
    }
    il = _image_level(outcome)
    per_threshold["cgF1"] = per_threshold["positive_micro_F1"] * il["IL_MCC"]

    values: dict[str, float | None] = {}
    for name, curve in per_threshold.items():
        values[name] = None if curve is None else float(np.mean(curve))
        for t in (0.5, 0.75):
            index = int(np.argmin(np.abs(IOU_THRESHOLDS - t)))
            values[f"{name}@{t}"] = None if curve is None else float(curve[index])
    values.update(il)
    return CgF1Metrics(
        iou_type=iou_type,
        score_threshold=score_threshold,
        cgF1=values["cgF1"],
        IL_MCC=il["IL_MCC"],
        positive_micro_F1=values["positive_micro_F1"],
        values=values,
        pairs=outcome,
    )


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return num / (den + _EPS)


def _f1(precision: np.ndarray, recall: np.ndarray) -> np.ndarray:
    return 2 * precision * recall / (precision + recall + _EPS)


def _image_level(n: dict[str, int]) -> dict[str, float]:
    tp, fp, tn, fn = (float(n[k]) for k in ("TP", "FP", "TN", "FN"))
    recall = tp / (tp + fn + _IL_EPS)
    precision = tp / (tp + fp + _IL_EPS)
    mcc_den = ((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)) ** 0.5
    return {
        "IL_precision": precision,
        "IL_recall": recall,
        "IL_F1": 2 * precision * recall / (precision + recall + _IL_EPS),
        "IL_FPR": fp / (fp + tn + _IL_EPS),
        "IL_MCC": (tp * tn - fp * fn) / (mcc_den + _IL_EPS),
    }


def _iou_matrix(dts: list[dict], gts: list[dict], iou_type: str, size: tuple[int, int]) -> np.ndarray:
    """``(len(dts), len(gts))`` IoU of detections with (non-crowd) objects."""
    if iou_type == "bbox":
        d = np.asarray([e["bbox"] for e in dts], dtype=np.float64)
        g = np.asarray([a["bbox"] for a in gts], dtype=np.float64)
        top_left = np.maximum(d[:, None, :2], g[None, :, :2])
        bottom_right = np.minimum(d[:, None, :2] + d[:, None, 2:], g[None, :, :2] + g[None, :, 2:])
        inter = np.clip(bottom_right - top_left, 0, None).prod(-1)
        union = d[:, None, 2:].prod(-1) + g[None, :, 2:].prod(-1) - inter
        return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
    d = [annotation_rle(e["segmentation"], *size) for e in dts]
    g = [annotation_rle(a["segmentation"], *size) for a in gts]
    return np.asarray(coco_mask.iou(d, g, [0] * len(g)), dtype=np.float64).reshape(len(d), len(g))
