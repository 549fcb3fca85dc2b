"""Exemplar (box-prompt) queries: some positive text queries become "find every one like this box".

With probability ``probability`` a positive query of a training image is turned into an exemplar
query: 1..``max_positives`` of its own target objects are drawn as positive exemplar boxes (label 1),
and up to ``max_negatives`` objects of *other* categories on the same image as negative exemplar boxes
(label 0). Its text becomes the official placeholder ``"visual"`` unless ``keep_text``. The targets
stay all the query's objects, the exemplars' own objects included (as in Meta's ``TextQueryToVisual``).

The draw is a pure function of the query and its random generator, so ``data inspect`` can count the
exemplar queries of an epoch without reading images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sam3tune.data.coco import CocoObject
from sam3tune.data.config import ExemplarConfig

VISUAL_PROMPT = "visual"
"""The text of an exemplar query without its category text (official SAM 3 placeholder)."""

PADDING_LABEL = -1
"""``Batch.exemplar_labels`` value of a padding slot (1 = positive, 0 = negative exemplar)."""


@dataclass(frozen=True)
class ExemplarDraw:
    """The exemplars of one query: ``positives`` index the query's own objects (its targets, in order);
    ``negatives`` are objects of other categories on the same image."""

    positives: tuple[int, ...]
    negatives: tuple[CocoObject, ...]


def draw_exemplars(
    positives: dict[int, tuple[CocoObject, ...]], config: ExemplarConfig, rng: np.random.Generator
) -> dict[int, ExemplarDraw]:
    """Which positive queries of one image (category id -> its target objects) become exemplar queries.

    Categories are visited in ascending id order; each draws its coin, then (if chosen) the number and
    choice of positives, then of negatives, all from ``rng``.
    """
    draws: dict[int, ExemplarDraw] = {}
    if not config.enabled:
        return draws
    for cat_id in sorted(positives):
        if rng.random() >= config.probability:
            continue
        objects = positives[cat_id]
        k = int(rng.integers(1, min(config.max_positives, len(objects)) + 1))
        chosen = tuple(sorted(int(i) for i in rng.choice(len(objects), size=k, replace=False)))
        others = [o for c in sorted(positives) if c != cat_id for o in positives[c]]
        m = int(rng.integers(0, min(config.max_negatives, len(others)) + 1))
        picked = sorted(int(i) for i in rng.choice(len(others), size=m, replace=False)) if m else []
        draws[cat_id] = ExemplarDraw(chosen, tuple(others[i] for i in picked))
    return draws
