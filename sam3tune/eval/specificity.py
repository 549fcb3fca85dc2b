"""Prompt specificity: how often a prompt fires on images that do not contain its category.

For every image, the prompts of the categories absent from it (no annotation of that category,
crowd or not) are negative queries. A negative query *fires* when it has at least one detection
with score >= the threshold. The false-fire rate of a category is fired / negative queries.
A tuned model that "fires on every prompt" shows up here even when its AP looks fine.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class SpecificityMetrics:
    """False fires on negative (image, prompt) pairs, overall and per category name.

    ``per_category[name]`` has ``negative_images``, ``fired_images``, ``false_fire_rate`` (None
    without negatives) and ``false_detections`` (detections >= threshold on its negatives).
    """

    score_threshold: float
    negative_pairs: int
    fired_pairs: int
    false_fire_rate: float | None
    false_detections: int
    per_category: dict[str, dict[str, float | int | None]] = field(default_factory=dict)


def specificity_metrics(
    gt: dict, results: Sequence[dict], score_threshold: float = 0.5
) -> SpecificityMetrics:
    """False-fire counts of COCO ``results`` on the negative pairs of COCO ground truth ``gt``."""
    present = {(a["image_id"], a["category_id"]) for a in gt["annotations"]}
    detections = Counter((r["image_id"], r["category_id"]) for r in results if r["score"] >= score_threshold)
    per_category = {}
    totals = Counter()
    for category in gt["categories"]:
        negatives = [img["id"] for img in gt["images"] if (img["id"], category["id"]) not in present]
        counts = [detections[image_id, category["id"]] for image_id in negatives]
        fired = sum(1 for c in counts if c > 0)
        per_category[category["name"]] = {
            "negative_images": len(negatives),
            "fired_images": fired,
            "false_fire_rate": fired / len(negatives) if negatives else None,
            "false_detections": sum(counts),
        }
        totals.update(negatives=len(negatives), fired=fired, detections=sum(counts))
    return SpecificityMetrics(
        score_threshold=score_threshold,
        negative_pairs=totals["negatives"],
        fired_pairs=totals["fired"],
        false_fire_rate=totals["fired"] / totals["negatives"] if totals["negatives"] else None,
        false_detections=totals["detections"],
        per_category=per_category,
    )
