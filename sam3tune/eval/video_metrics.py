"""Video instance segmentation metrics: video mask AP (the YouTube-VIS protocol) and HOTA (DetA, AssA).

**Video AP.** As in YouTube-VIS: a predicted track and a ground-truth track of the same video and category
overlap by their spatio-temporal IoU, ``sum_t |P_t & G_t| / sum_t |P_t | G_t|`` over the video's frames (a
frame where either is absent adds its area to the union only; for a crowd track the denominator is the
prediction's area). Tracks are matched greedily by score at IoU thresholds 0.50:0.05:0.95, precision is
interpolated at 101 recall points, at most 100 tracks per video and category, averaged over categories
with ground truth; a track's area (for the small / medium / large ranges) is its mean area over the frames
it is present in. COCO's matching and accumulation are faster-coco-eval's, fed the spatio-temporal IoUs.

**HOTA** (Luiten et al., IJCV 2021) from ``trackeval`` (an optional extra: ``pip install
'sam3tune[video-eval]'``): per video and category, detections matched frame by frame by mask IoU; DetA
(detection: TP / (TP + FN + FP)), AssA (association: how much of each matched pair's ground-truth and
predicted tracks coincide), HOTA = sqrt(DetA x AssA), each averaged over localisation thresholds
0.05:0.05:0.95; combined over videos per category, then averaged over categories (trackeval's class
average). Predicted tracks with ``score < score_threshold`` are left out (HOTA takes hard decisions).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from faster_coco_eval import COCO, COCOeval_faster
from faster_coco_eval.core import mask as coco_mask

from sam3tune.errors import require_package
from sam3tune.eval.rle import _binary_ready
from sam3tune.eval.ytvis import Track, VideoSet

HOTA_KEYS = ("HOTA", "DetA", "AssA", "DetRe", "DetPr", "AssRe", "AssPr", "LocA")


@dataclass
class VideoMetrics:
    """Video AP and HOTA; values in [0, 1] or None where undefined. ``per_category``: name -> values."""

    AP: float | None
    AP50: float | None
    AP75: float | None
    AR10: float | None
    hota: dict[str, float | None] = field(default_factory=dict)
    per_category: dict[str, dict[str, float | None]] = field(default_factory=dict)
    videos: int = 0
    tracks: int = 0
    predicted_tracks: int = 0

    def summary(self) -> dict[str, float | None]:
        return {
            "video_AP": self.AP,
            "video_AP50": self.AP50,
            "video_AP75": self.AP75,
            "video_AR10": self.AR10,
            **{k: v for k, v in self.hota.items()},
        }


# ------------------------------------------------------------------------------------------ IoU
def _frame_areas(tracks: Sequence[Track], frame: int) -> np.ndarray:
    areas = np.zeros(len(tracks))
    present = [i for i, t in enumerate(tracks) if t.masks[frame] is not None]
    if present:
        areas[present] = coco_mask.area([_binary_ready(tracks[i].masks[frame]) for i in present])
    return areas


def spatio_temporal_iou(predicted: Sequence[Track], truth: Sequence[Track]) -> np.ndarray:
    """``(P, G)`` spatio-temporal IoUs of tracks of one video (module docstring)."""
    if not predicted or not truth:
        return np.zeros((len(predicted), len(truth)))
    length = len(truth[0].masks)
    crowd = np.array([t.iscrowd for t in truth], dtype=bool)
    intersection = np.zeros((len(predicted), len(truth)))
    union = np.zeros((len(predicted), len(truth)))
    for frame in range(length):
        p_area, g_area = _frame_areas(predicted, frame), _frame_areas(truth, frame)
        union += np.where(crowd[None, :], p_area[:, None], p_area[:, None] + g_area[None, :])
        p_in = [i for i, t in enumerate(predicted) if t.masks[frame] is not None]
        g_in = [j for j, t in enumerate(truth) if t.masks[frame] is not None]
        if not p_in or not g_in:
            continue
        iou = np.asarray(
            coco_mask.iou(
                [_binary_ready(predicted[i].masks[frame]) for i in p_in],
                [_binary_ready(truth[j].masks[frame]) for j in g_in],
                [int(crowd[j]) for j in g_in],
            )
        ).reshape(len(p_in), len(g_in))
        pa, ga = p_area[p_in][:, None], g_area[g_in][None, :]
        # iou = I / (P + G - I)  =>  I = iou (P + G) / (1 + iou); crowd: iou = I / P
        inter = np.where(crowd[g_in][None, :], iou * pa, iou * (pa + ga) / (1 + iou))
        intersection[np.ix_(p_in, g_in)] += inter
    union -= np.where(crowd[None, :], 0.0, intersection)
    return np.divide(intersection, union, out=np.zeros_like(union), where=union > 0)


def _mean_area(track: Track) -> float:
    areas = (
        [a for a in coco_mask.area([_binary_ready(m) for m in track.masks if m is not None])]
        if any(m is not None for m in track.masks)
        else [0.0]
    )
    return float(np.mean(areas))


# ------------------------------------------------------------------------------------------ video AP
class _SpatioTemporalEval(COCOeval_faster):
    """COCO evaluation whose IoU is the tracks' spatio-temporal IoU (``tracks`` by annotation id)."""

    truth: dict[int, Track]
    predicted: dict[int, Track]

    def computeIoU(self, imgId, catId):
        gt = self.gt_dataset.get_instances([imgId], [catId], True)[0][0]
        dt = self.dt_dataset.get_instances([imgId], [catId], True)[0][0]
        if not gt or not dt:
            return []
        order = np.argsort([-d["score"] for d in dt], kind="mergesort")[: self.params.maxDets[-1]]
        return spatio_temporal_iou(
            [self.predicted[dt[i]["id"]] for i in order], [self.truth[g["id"]] for g in gt]
        )


def video_ap(truth: VideoSet, predicted: Sequence[Track]) -> tuple[dict, dict[str, dict]]:
    """Video mask AP (YouTube-VIS protocol): overall ``{"AP", "AP50", "AP75", "AR10"}`` and per category."""

    def box(area: float) -> list[float]:  # COCO needs a box; its area must be the track's mean area
        side = float(np.sqrt(area))
        return [0.0, 0.0, side, side]

    truth_by_id = {k + 1: t for k, t in enumerate(truth.tracks)}
    gt = {
        "images": [{"id": v, "width": d["width"], "height": d["height"]} for v, d in truth.videos.items()],
        "categories": [{"id": c, "name": n} for c, n in truth.categories.items()],
        "annotations": [
            {
                "id": k,
                "image_id": t.video_id,
                "category_id": t.category_id,
                "area": _mean_area(t),
                "bbox": box(_mean_area(t)),
                "iscrowd": t.iscrowd,
            }
            for k, t in truth_by_id.items()
        ],
    }
    results = [
        {"image_id": t.video_id, "category_id": t.category_id, "score": t.score, "bbox": box(_mean_area(t))}
        for t in predicted
    ]
    quiet = {"print_function": lambda *_: None}
    coco_gt = COCO(gt, **quiet)
    coco_dt = coco_gt.loadRes(results) if results else COCO({**gt, "annotations": []}, **quiet)
    evaluator = _SpatioTemporalEval(coco_gt, coco_dt, iouType="bbox", **quiet)
    evaluator.params.maxDets = [1, 10, 100]
    evaluator.truth = truth_by_id
    ids = [a["id"] for a in coco_dt.dataset["annotations"]]
    evaluator.predicted = dict(zip(ids, predicted, strict=True))
    evaluator.evaluate()
    evaluator.accumulate()
    precision = np.asarray(evaluator.eval["precision"])  # [T, R, K, A, M]
    recall = np.asarray(evaluator.eval["recall"])  # [T, K, A, M]
    thresholds = np.asarray(evaluator.params.iouThrs)
    everywhere = list(evaluator.params.areaRngLbl).index("all")

    def mean(values: np.ndarray) -> float | None:
        defined = values[values > -1]
        return float(defined.mean()) if defined.size else None

    def ap(iou: float | None = None, k: int | None = None) -> float | None:
        p = precision[:, :, :, everywhere, -1]
        if iou is not None:
            p = p[np.isclose(thresholds, iou)]
        return mean(p if k is None else p[:, :, k])

    names = truth.categories
    per_category = {
        names[c]: {"AP": ap(k=k), "AP50": ap(0.5, k)} for k, c in enumerate(evaluator.params.catIds)
    }
    overall = {"AP": ap(), "AP50": ap(0.5), "AP75": ap(0.75), "AR10": mean(recall[:, :, everywhere, 1])}
    return overall, per_category


# ------------------------------------------------------------------------------------------ HOTA
def require_trackeval():
    """trackeval's HOTA class, or a :class:`~sam3tune.errors.MissingPackageError` saying how to add it."""
    return require_package("trackeval.metrics", "HOTA", "pip install 'sam3tune[video-eval]'").HOTA


def hota(truth: VideoSet, predicted: Sequence[Track], score_threshold: float = 0.5) -> tuple[dict, dict]:
    """HOTA, DetA, AssA (and their recall / precision parts, LocA): overall (class average) and per
    category, each averaged over trackeval's localisation thresholds."""
    metric = require_trackeval()()
    kept = [t for t in predicted if t.score >= score_threshold]
    per_category: dict[str, dict] = {}
    combined = {}
    for category, name in truth.categories.items():
        sequences = {}
        for video_id, video in truth.videos.items():
            gt = [
                t
                for t in truth.tracks
                if t.video_id == video_id and t.category_id == category and not t.iscrowd
            ]
            dt = [t for t in kept if t.video_id == video_id and t.category_id == category]
            if gt or dt:
                sequences[video_id] = metric.eval_sequence(_sequence(gt, dt, video["length"]))
        if not any(t.category_id == category for t in truth.tracks):
            continue  # no ground truth: undefined, as for AP
        if not sequences:
            continue
        combined[name] = metric.combine_sequences(sequences)
        per_category[name] = _hota_values(combined[name])
    if not combined:
        return dict.fromkeys(HOTA_KEYS), per_category
    overall = metric.combine_classes_class_averaged(combined)
    return _hota_values(overall), per_category


def _hota_values(result: dict) -> dict[str, float]:
    return {key: float(np.mean(result[key])) for key in HOTA_KEYS}


def _sequence(truth: Sequence[Track], predicted: Sequence[Track], length: int) -> dict:
    """trackeval's per-sequence input: ids present and mask IoUs, frame by frame."""
    gt_ids, dt_ids, similarity = [], [], []
    for frame in range(length):
        g_in = [j for j, t in enumerate(truth) if t.masks[frame] is not None]
        p_in = [i for i, t in enumerate(predicted) if t.masks[frame] is not None]
        gt_ids.append(np.array(g_in, dtype=int))
        dt_ids.append(np.array(p_in, dtype=int))
        if g_in and p_in:
            iou = coco_mask.iou(
                [_binary_ready(predicted[i].masks[frame]) for i in p_in],
                [_binary_ready(truth[j].masks[frame]) for j in g_in],
                [0] * len(g_in),
            )
            similarity.append(np.asarray(iou, dtype=float).reshape(len(p_in), len(g_in)).T)
        else:
            similarity.append(np.zeros((len(g_in), len(p_in))))
    return {
        "num_timesteps": length,
        "num_gt_ids": len(truth),
        "num_tracker_ids": len(predicted),
        "num_gt_dets": int(sum(len(g) for g in gt_ids)),
        "num_tracker_dets": int(sum(len(d) for d in dt_ids)),
        "gt_ids": gt_ids,
        "tracker_ids": dt_ids,
        "similarity_scores": similarity,
    }


def video_metrics(
    truth: VideoSet, predicted: Sequence[Track], hota_score_threshold: float = 0.5
) -> VideoMetrics:
    """Video AP and HOTA of ``predicted`` tracks against ``truth``."""
    overall, ap_per_category = video_ap(truth, predicted)
    hota_overall, hota_per_category = hota(truth, predicted, hota_score_threshold)
    per_category = {
        name: {**values, **hota_per_category.get(name, {})} for name, values in ap_per_category.items()
    }
    return VideoMetrics(
        AP=overall["AP"],
        AP50=overall["AP50"],
        AP75=overall["AP75"],
        AR10=overall["AR10"],
        hota=hota_overall,
        per_category=per_category,
        videos=len(truth.videos),
        tracks=len(truth.tracks),
        predicted_tracks=len(predicted),
    )
