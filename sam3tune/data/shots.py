"""K-shot training splits (``data.shots=K``, ``data.shots_seed=S``, ``data.shots_rule``): the few-shot
protocols that the SAM 3 paper's 10-shot rows use, sampled from any training split.

Two rules, as the public protocols define a "shot" (sources in ``docs/data.md``, "K-shot training splits"):

- ``image`` (default; GLIP's ODinW few-shot splits, the SAM 3 paper's ODinW13 10-shot row): a shot is an
  *image* showing the category. Images are visited in a seeded random order; an image is taken when at
  least one category it shows still has fewer than K images, and then it counts as one shot for *every*
  category it shows. A taken image keeps **all** its annotations (it stays exhaustively labelled, so its
  absent categories stay true negatives). Categories shown on images taken for others can end with more
  than K shots; a category shown on fewer than K images gets them all.
- ``instance`` (TFA-style splits, as used for Foundational FSOD / RF100-VL-FSOD): a shot is an
  *annotated object*. For each category, the images showing it are visited in a seeded random order
  (independently per category) and an image is taken for that category when all its objects of the
  category still fit in the remaining budget, until exactly K objects are collected (fewer when no
  order reaches K exactly). A taken image keeps only the objects of the categories it was taken for;
  the other categories' objects are removed, and since they are still there in the picture those
  categories are **unlabelled** on it: neither targets nor negative prompts (categories absent from the
  image stay negatives).

Both are deterministic per seed: the order is drawn from ``numpy.random.default_rng(SeedSequence([seed,
...]))``. Crowd objects never count as shots; they stay on a taken image (as ignore regions).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from sam3tune.data.coco import CocoObject, CocoSplit

ShotRule = Literal["image", "instance"]
_STREAM = 0x5E07  # tags the K-shot order among the seeded streams of the package


@dataclass(frozen=True)
class ShotSample:
    """What a K-shot sample took from a split.

    ``image_ids``: the taken images (ascending id); ``shots``: category id -> shots it got (images for the
    ``image`` rule, objects for ``instance``); ``instances``: category id -> labelled objects kept;
    ``available``: category id -> shots the full split offers (its images, or its objects);
    ``unlabelled``: how many (image, category) pairs the ``instance`` rule left unlabelled."""

    k: int
    seed: int
    rule: ShotRule
    image_ids: tuple[int, ...]
    images_available: int
    shots: dict[int, int]
    instances: dict[int, int]
    available: dict[int, int]
    unlabelled: int

    @property
    def short(self) -> list[int]:
        """Categories that got fewer than K shots (the split offers fewer, or no order reaches K exactly)."""
        return sorted(c for c, n in self.shots.items() if n < self.k)

    def as_dict(self, names: dict[int, str] | None = None) -> dict[str, Any]:
        """A JSON-ready record (``data inspect --json``, the training log)."""
        names = names or {}
        return {
            "k": self.k,
            "seed": self.seed,
            "rule": self.rule,
            "images": len(self.image_ids),
            "images_available": self.images_available,
            "image_ids": list(self.image_ids),
            "unlabelled_pairs": self.unlabelled,
            "categories": [
                {
                    "id": c,
                    "name": names.get(c),
                    "shots": self.shots[c],
                    "instances": self.instances[c],
                    "available": self.available[c],
                }
                for c in sorted(self.shots)
            ],
            "short": self.short,
        }

    def describe(self) -> str:
        """One line for people: how many images, shots per category, which categories fell short."""
        unit = "image" if self.rule == "image" else "object"
        counts = Counter(self.shots.values())
        spread = "; ".join(
            f"{n} {unit}{'' if n == 1 else 's'}: {c} categor{'y' if c == 1 else 'ies'}"
            for n, c in sorted(counts.items())
        )
        text = (
            f"K-shot sample (data.shots={self.k}, seed {self.seed}, rule {self.rule}): "
            f"{len(self.image_ids)} of {self.images_available} images; shots per category: {spread}"
        )
        if self.short:
            text += f"; fewer than {self.k}: categories {', '.join(map(str, self.short))}"
        if self.unlabelled:
            text += f"; {self.unlabelled} (image, category) pairs left unlabelled (not negatives)"
        return text


def sample_shots(
    split: CocoSplit, k: int, seed: int, rule: ShotRule = "image"
) -> tuple[CocoSplit, ShotSample]:
    """The K-shot sample of ``split`` under ``rule`` (see the module docstring) and its record.

    The returned split holds the taken images (in the split's order) with the objects the rule keeps; for
    the ``instance`` rule its ``unlabelled`` maps image id -> categories removed from that image."""
    if k < 1:
        raise ValueError(f"data.shots={k}: must be >= 1")
    targets = {
        image.image_id: [o for o in split.objects[image.image_id] if not o.iscrowd] for image in split.images
    }
    if rule == "image":
        taken, kept = _image_rule(targets, k, seed)
    elif rule == "instance":
        taken, kept = _instance_rule(targets, k, seed)
    else:
        raise ValueError(f"data.shots_rule={rule!r}: must be 'image' or 'instance'")
    images = [image for image in split.images if image.image_id in taken]
    objects: dict[int, list[CocoObject]] = {}
    unlabelled: dict[int, frozenset[int]] = {}
    shots: Counter[int] = Counter()
    instances: Counter[int] = Counter()
    for image in images:
        cats = kept[image.image_id]
        objects[image.image_id] = [
            o for o in split.objects[image.image_id] if o.iscrowd or o.category_id in cats
        ]
        removed = {o.category_id for o in targets[image.image_id]} - cats
        if removed:
            unlabelled[image.image_id] = frozenset(removed)
        for o in targets[image.image_id]:
            if o.category_id in cats:
                instances[o.category_id] += 1
        for c in cats:
            shots[c] += 1
    if rule == "instance":
        shots = instances
    available = _available(targets, rule)
    sample = ShotSample(
        k=k,
        seed=seed,
        rule=rule,
        image_ids=tuple(sorted(taken)),
        images_available=len(split.images),
        shots={c: shots[c] for c in available},
        instances={c: instances[c] for c in available},
        available=available,
        unlabelled=sum(len(v) for v in unlabelled.values()),
    )
    sampled = dataclasses.replace(split, images=images, objects=objects, unlabelled=unlabelled)
    return sampled, sample


def _order(values: list[int], seed: int, *stream: int) -> list[int]:
    """``values`` (sorted first) in the seeded random order of ``(seed, stream...)``."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, _STREAM, *stream]))
    ordered = sorted(values)
    return [ordered[i] for i in rng.permutation(len(ordered))]


def _image_rule(
    targets: dict[int, list[CocoObject]], k: int, seed: int
) -> tuple[set[int], dict[int, set[int]]]:
    """GLIP / ODinW: visit images in a seeded order; take one that shows a category still short of K
    images; it counts for every category it shows and keeps all its annotations."""
    shows = {image_id: {o.category_id for o in objs} for image_id, objs in targets.items()}
    need = {c: k for cats in shows.values() for c in cats}
    taken: set[int] = set()
    for image_id in _order([i for i, cats in shows.items() if cats], seed):
        if not any(need[c] > 0 for c in shows[image_id]):
            continue
        taken.add(image_id)
        for c in shows[image_id]:
            need[c] -= 1
        if not any(n > 0 for n in need.values()):
            break
    return taken, {image_id: shows[image_id] for image_id in taken}


def _instance_rule(
    targets: dict[int, list[CocoObject]], k: int, seed: int
) -> tuple[set[int], dict[int, set[int]]]:
    """TFA / Foundational FSOD: per category, visit its images in a seeded order; take an image when all
    its objects of the category fit in what is left of K; stop at exactly K objects."""
    per_image: dict[int, Counter[int]] = {
        i: Counter(o.category_id for o in objs) for i, objs in targets.items()
    }
    categories = sorted({c for counts in per_image.values() for c in counts})
    kept: dict[int, set[int]] = {}
    for c in categories:
        left = k
        for image_id in _order([i for i, counts in per_image.items() if counts[c]], seed, c):
            count = per_image[image_id][c]
            if count > left:
                continue
            kept.setdefault(image_id, set()).add(c)
            left -= count
            if left == 0:
                break
    return set(kept), kept


def _available(targets: dict[int, list[CocoObject]], rule: ShotRule) -> dict[int, int]:
    """Shots the full split offers per category: images showing it (``image``) or its objects."""
    counts: Counter[int] = Counter()
    for objs in targets.values():
        if rule == "image":
            counts.update({o.category_id for o in objs})
        else:
            counts.update(o.category_id for o in objs)
    return dict(sorted(counts.items()))
