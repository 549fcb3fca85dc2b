"""Prompt confusion: which other category's objects a prompt's detections land on.

A detection of prompt ``p`` (score >= ``score_threshold``) that overlaps no object of ``p`` (box IoU
< ``iou_threshold`` with every one of them) is a false positive; when it overlaps an object of another
category ``c`` (box IoU >= ``iou_threshold``) it *lands on* the one it overlaps most, and counts once
for ``p -> c`` ("moon -> heart: 4"). The objects are the labelled ground truth (crowd regions
included) plus, optionally, extra objects such as the starting model's own detections of the untuned
(retention) prompts (:mod:`sam3tune.eval.retention`), which name what the labels do not.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass
class ConfusionTable:
    """``counts[p][c]``: detections of prompt ``p`` that land on an object of category ``c`` (only
    non-zero pairs); ``fired[p]``: detections of ``p`` at or above the threshold; ``extra_categories``:
    the categories whose objects came from outside the labels (reference detections)."""

    score_threshold: float
    iou_threshold: float
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    fired: dict[str, int] = field(default_factory=dict)
    extra_categories: list[str] = field(default_factory=list)

    def pairs(self) -> list[tuple[str, str, int]]:
        """``(prompt, other category, detections)`` for every non-zero pair, most first (then by name)."""
        found = [(p, c, n) for p, row in self.counts.items() for c, n in row.items()]
        return sorted(found, key=lambda item: (-item[2], item[0], item[1]))

    def line(self, prompt: str, other: str) -> str:
        """``"moon -> heart: 4"`` (``"moon -> circle (reference): 2"`` for extra categories)."""
        mark = " (reference)" if other in self.extra_categories else ""
        return f"{prompt} -> {other}{mark}: {self.counts.get(prompt, {}).get(other, 0)}"


def confusion_table(
    gt: dict,
    results: Sequence[dict],
    score_threshold: float = 0.5,
    iou_threshold: float = 0.5,
    extra_objects: Iterable[tuple[int, str, Sequence[float]]] = (),
) -> ConfusionTable:
    """The confusion of the prompts (categories) of COCO ground truth ``gt`` by their ``results``.

    Args:
        gt: COCO ground truth (``categories`` are the prompts asked; ``annotations`` with ``bbox`` xywh).
        results: COCO results of those prompts (``bbox`` xywh pixels, ``score``).
        score_threshold: detections below it are ignored.
        iou_threshold: box IoU for "on an object".
        extra_objects: ``(image_id, category name, xywh box)`` objects beyond the labels, e.g. reference
            detections of other prompts.
    """
    names = {c["id"]: c["name"] for c in gt["categories"]}
    objects: dict[int, list[tuple[str, np.ndarray]]] = defaultdict(list)
    for ann in gt["annotations"]:
        if ann["category_id"] in names:
            objects[ann["image_id"]].append((names[ann["category_id"]], _xyxy(ann["bbox"])))
    extra_names = set()
    for image_id, name, box in extra_objects:
        objects[image_id].append((name, _xyxy(box)))
        extra_names.add(name)
    table = ConfusionTable(score_threshold, iou_threshold, fired=dict.fromkeys(names.values(), 0))
    table.extra_categories = sorted(extra_names - set(names.values()))
    for entry in results:
        prompt = names.get(entry["category_id"])
        if prompt is None or entry["score"] < score_threshold:
            continue
        table.fired[prompt] += 1
        here = objects.get(entry["image_id"], [])
        if not here:
            continue
        ious = _iou(_xyxy(entry["bbox"]), np.stack([box for _, box in here]))
        own = [i for i, (name, _) in enumerate(here) if name == prompt]
        if own and ious[own].max() >= iou_threshold:
            continue  # on an object of its own category: not a confusion
        others = [i for i, (name, _) in enumerate(here) if name != prompt and ious[i] >= iou_threshold]
        if others:
            best = max(others, key=lambda i: ious[i])
            row = table.counts.setdefault(prompt, {})
            row[here[best][0]] = row.get(here[best][0], 0) + 1
    return table


def _xyxy(box: Sequence[float]) -> np.ndarray:
    x, y, w, h = (float(v) for v in box)
    return np.array([x, y, x + w, y + h], dtype=np.float64)


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box with ``(N, 4)`` xyxy boxes; empty boxes give 0."""
    top_left = np.maximum(box[:2], boxes[:, :2])
    bottom_right = np.minimum(box[2:], boxes[:, 2:])
    inter = np.clip(bottom_right - top_left, 0, None).prod(axis=1)
    area = np.clip(box[2:] - box[:2], 0, None).prod()
    areas = np.clip(boxes[:, 2:] - boxes[:, :2], 0, None).prod(axis=1)
    union = area + areas - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
