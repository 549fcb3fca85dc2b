"""The queries the forgetting remedies add to a training split (``docs/train.md``, "Fine-tune without
forgetting"); plain data, built from the starting model's detections by :mod:`sam3tune.train.retention`.

- **Replay**: on each training image, a retention prompt (a concept the run does not tune) becomes an
  ordinary query for the official criterion: positive with the starting model's confident detections
  (score >= the threshold) as its targets, negative where it finds nothing (every score below the
  negative threshold); in between it is not asked (the starting model was unsure).
- **Distillation**: every retention prompt on every image, flagged for the distillation loss against the
  starting model's outputs (``Sample.distilled``); without replay such a query has no target and is kept
  out of the criterion (``Sample.supervised`` False).
- **Confusable negatives**: negative queries whose image holds an object of a category their prompt is
  confused with (a labelled object, or a confident detection of a retention prompt) are asked
  ``repeats`` more times (and always asked when ``data.negatives`` samples k).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sam3tune.data.coco import CocoObject
from sam3tune.data.masks import SegmentationError, validate_segmentation
from sam3tune.data.queries import QueryCategory, QueryPlan, clean_prompt


@dataclass(frozen=True)
class RetentionQuery:
    """One retention prompt asked on one image: its category (a key of
    :attr:`RetentionQueries.categories`), its targets (replay positives: the starting model's confident
    detections as objects; empty for a negative or a distillation-only query), whether the criterion sees
    it (replay) and whether it is distilled."""

    category_id: int
    objects: tuple[CocoObject, ...]
    supervised: bool
    distilled: bool


@dataclass
class RetentionQueries:
    """What a training dataset asks besides the split's own queries.

    ``categories``: the retention prompts, with ids after the split's; ``per_image``: image id -> its
    retention queries; ``hard_negatives``: image id -> the category ids (the split's or retention ones)
    whose negative query on that image is repeated ``repeats`` more times; ``sampled``: when > 0, each
    image asks only that many of its retention queries per epoch (drawn anew each epoch); ``objects``
    counts the replay targets, ``uncertain`` the (image, prompt) pairs left unasked by replay;
    ``detections``: the starting model's answers (COCO results) it was made from, kept with the run so
    that a resume rebuilds it exactly.
    """

    categories: dict[int, QueryCategory] = field(default_factory=dict)
    per_image: dict[int, tuple[RetentionQuery, ...]] = field(default_factory=dict)
    hard_negatives: dict[int, frozenset[int]] = field(default_factory=dict)
    repeats: int = 0
    sampled: int = 0
    objects: int = 0
    uncertain: int = 0
    detections: list[dict] = field(default_factory=list)

    def queries_per_image(self) -> int:
        """The most queries one image gets from here (retention queries and repeated hard negatives)."""
        retention = max((len(q) for q in self.per_image.values()), default=0)
        if self.sampled:
            retention = min(retention, self.sampled)
        hard = max((len(h) for h in self.hard_negatives.values()), default=0)
        return retention + self.repeats * hard


def retention_categories(plan: QueryPlan, prompts: Sequence[str]) -> dict[int, QueryCategory]:
    """The retention prompts as categories numbered after the split's largest id."""
    first = max(plan.split.categories, default=0) + 1
    return {first + k: QueryCategory(first + k, p, clean_prompt(p)) for k, p in enumerate(prompts)}


def retention_queries(
    plan: QueryPlan,
    categories: dict[int, QueryCategory],
    detections: Iterable[dict],
    *,
    replay: bool,
    distill: bool,
    score_threshold: float,
    negative_threshold: float,
) -> RetentionQueries:
    """The retention queries of every image of ``plan`` from the starting model's ``detections`` there:
    COCO results (``image_id``, ``category_id`` a key of ``categories``, ``bbox`` xywh pixels, ``score``,
    optional ``segmentation`` RLE) of every retention prompt on every image, all scores kept.

    Replay (``replay``): positives = detections with score >= ``score_threshold``; negatives = pairs
    whose best score is < ``negative_threshold``; the pairs between are not asked (counted in
    ``uncertain``). Distillation (``distill``): every pair asked, flagged. Segmentations that are empty or
    unusable leave the object box-only."""
    found: dict[tuple[int, int], list[dict]] = {}
    for entry in detections:
        found.setdefault((entry["image_id"], entry["category_id"]), []).append(entry)
    out = RetentionQueries(categories=categories)
    next_id = 1 + max((o.annotation_id for objs in plan.split.objects.values() for o in objs), default=0)
    for query in plan.images:
        image = query.image
        asked = []
        for category_id in sorted(categories):
            entries = found.get((image.image_id, category_id), [])
            best = max((e["score"] for e in entries), default=0.0)
            objects: tuple[CocoObject, ...] = ()
            supervised = replay
            if replay and best >= score_threshold:
                confident = [e for e in entries if e["score"] >= score_threshold]
                objects = tuple(
                    _pseudo_object(e, next_id + k, image.height, image.width) for k, e in enumerate(confident)
                )
                next_id += len(objects)
                out.objects += len(objects)
            elif replay and best >= negative_threshold:
                out.uncertain += 1
                supervised = False
            if supervised or distill:
                asked.append(RetentionQuery(category_id, objects, supervised, distill))
        if asked:
            out.per_image[image.image_id] = tuple(asked)
    return out


def _pseudo_object(entry: dict, annotation_id: int, height: int, width: int) -> CocoObject:
    """A detection as a training object: its box (clipped to the image) and its mask when usable."""
    x, y, w, h = (float(v) for v in entry["bbox"])
    box = (max(0.0, x), max(0.0, y), min(float(width), x + w), min(float(height), y + h))
    segmentation = entry.get("segmentation")
    try:
        segmentation = validate_segmentation(segmentation, height, width).segmentation
    except SegmentationError:
        segmentation = None
    return CocoObject(annotation_id, entry["category_id"], box, segmentation, iscrowd=False)


def parse_pairs(pairs: Iterable[str], known: Iterable[str]) -> set[tuple[str, str]]:
    """``"moon -> heart"`` strings as (prompt, confused-with) pairs of cleaned prompts; a prompt that is
    no category of the run raises ``ValueError`` naming it."""
    names = {clean_prompt(k) for k in known}
    out = set()
    for text in pairs:
        parts = [clean_prompt(p) for p in str(text).split("->")]
        if len(parts) != 2 or not all(parts):
            raise ValueError(f"confusable pair {text!r} is not of the form 'prompt -> other prompt'")
        unknown = [p for p in parts if p not in names]
        if unknown:
            raise ValueError(
                f"confusable pair {text!r}: {unknown} is no category or retention prompt of the run"
            )
        out.add((parts[0], parts[1]))
    return out


def hard_negatives(
    plan: QueryPlan,
    queries: RetentionQueries,
    pairs: set[tuple[str, str]],
    extra_objects: dict[int, set[str]] | None = None,
) -> dict[int, frozenset[int]]:
    """Image id -> the categories (the split's, or replayed retention prompts) asked as negatives on it whose
    prompt is confused with a category present there: a labelled object of the split, or a prompt in
    ``extra_objects[image id]`` (e.g. the retention prompts the starting model found there)."""
    prompts = {c.category_id: c.prompt for c in plan.categories.values()}
    prompts.update({c.category_id: c.prompt for c in queries.categories.values()})
    confused: dict[str, set[str]] = {}
    for prompt, other in pairs:
        confused.setdefault(prompt, set()).add(other)
    out = {}
    for query in plan.images:
        image_id = query.image.image_id
        present = {prompts[o.category_id] for o in plan.split.objects[image_id] if o.category_id in prompts}
        present |= (extra_objects or {}).get(image_id, set())
        negatives = list(query.negative_candidates)
        negatives += [
            q.category_id for q in queries.per_image.get(image_id, ()) if q.supervised and not q.objects
        ]
        hard = frozenset(c for c in negatives if confused.get(prompts[c], set()) & present)
        if hard:
            out[image_id] = hard
    return out
