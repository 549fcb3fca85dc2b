"""From objects to prompt queries: one query per (image, category), positives and negatives.

- Positive query: a category with at least one non-crowd object in the image; its targets are
  all those objects (the largest ``max_objects_per_query`` kept, the rest counted).
- Negative query: a category used in the split but absent from the image (no object at all,
  crowd included), so the presence head learns "not here". All, none, or k sampled per image.
- Prompt text: the category name with ``_`` and ``-`` turned into spaces, lowercased, stripped,
  unless a prompt map (YAML or JSON, category name or id -> prompt) says otherwise.
- Categories with no non-crowd instance in the split, and Roboflow's placeholder category, are
  skipped (and reported) unless ``keep_unused_categories``.
- Two queried categories may not share a prompt (equal after lower-casing and dropping punctuation, or
  equal token ids once the model's tokenizer has cut them): the same prompt would be positive and
  negative on one image.
"""

from __future__ import annotations

import copy
import logging
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
import yaml

from sam3tune.config import parse_yaml
from sam3tune.data.coco import CocoImage, CocoObject, CocoSplit
from sam3tune.data.problems import DataError, ProblemReport
from sam3tune.data.shots import ShotSample
from sam3tune.json_file import loads_strict

if TYPE_CHECKING:
    from sam3tune.data.tiling import TilingSummary

Negatives = Literal["all", "none"] | int
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QueryCategory:
    """A category that gets queries: COCO id, name as in the file, prompt text."""

    category_id: int
    name: str
    prompt: str


@dataclass(frozen=True)
class ImageQueries:
    """The queries of one image: targets per positive category and the negative candidates.

    ``positives`` maps category id -> its (non-crowd, capped) objects, in category id order;
    ``negative_candidates`` are the category ids absent from the image, ascending.
    """

    image: CocoImage
    positives: dict[int, tuple[CocoObject, ...]]
    negative_candidates: tuple[int, ...]


@dataclass
class QueryPlan:
    """All queries of a split, before any negative sampling.

    ``problems`` is the split's report plus what planning skipped (categories, capped objects);
    ``skipped_categories`` maps each category left out to its problem kind.
    """

    split: CocoSplit
    categories: dict[int, QueryCategory]
    images: list[ImageQueries]
    negatives: Negatives
    max_objects_per_query: int
    problems: ProblemReport
    skipped_categories: dict[int, str]
    tiling: TilingSummary | None = None
    """What cutting images into tiles gave (:func:`sam3tune.data.tiling.tile_plan`); None: whole images."""
    shots: ShotSample | None = None
    """What a K-shot sample (``data.shots``) took from the full split; None without one."""

    @property
    def num_positive(self) -> int:
        return sum(len(q.positives) for q in self.images)

    @property
    def num_negative(self) -> int:
        """Negative queries per epoch (exact: with k sampled per image it is sum of min(k, candidates))."""
        return sum(negative_count(len(q.negative_candidates), self.negatives) for q in self.images)

    @property
    def num_targets(self) -> int:
        return sum(len(objs) for q in self.images for objs in q.positives.values())

    @property
    def has_masks(self) -> bool:
        """True when at least one target has a segmentation."""
        return any(
            o.segmentation is not None for q in self.images for objs in q.positives.values() for o in objs
        )


def clean_prompt(name: str) -> str:
    """``"Red_Circle-big "`` -> ``"red circle big"``: ``_``/``-`` to spaces, lowercased, single-spaced."""
    return re.sub(r"\s+", " ", re.sub(r"[_-]", " ", name)).strip().lower()


def load_prompt_map(path: str | Path) -> dict[str, str]:
    """A YAML or JSON mapping category name or id -> prompt text (keys returned as strings). YAML is read
    as YAML 1.2, like configs: ``on``, ``no``, ``yes`` are words, not booleans."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        data = (
            loads_strict(text, path, "prompt map") if path.suffix.lower() == ".json" else parse_yaml(text)
        )  # `on`, `no` stay text
    except (OSError, ValueError, yaml.YAMLError) as err:
        raise DataError("invalid_json", f"{path}: cannot read the prompt map: {err}") from err
    if not isinstance(data, dict) or not all(isinstance(v, str) and v.strip() for v in data.values()):
        raise DataError(
            "missing_key", f"{path}: the prompt map must map category names or ids to non-empty texts"
        )
    return {str(k): v.strip() for k, v in data.items()}


def plan_queries(
    split: CocoSplit,
    negatives: Negatives = "all",
    max_objects_per_query: int = 200,
    prompt_map: dict[str, str] | None = None,
    keep_unused_categories: bool = False,
) -> QueryPlan:
    """Build the queries of ``split`` (see module docstring); skips are counted in ``plan.problems``.

    Raises :class:`DataError` when a prompt-map key is no category, or the split has no usable query.
    """
    problems = copy.deepcopy(split.problems)
    skipped: dict[int, str] = {}
    categories = _query_categories(split, prompt_map or {}, keep_unused_categories, problems, skipped)
    images: list[ImageQueries] = []
    for image in split.images:
        objects = split.objects[image.image_id]
        # crowd objects also make a category "not absent", as do objects a K-shot sample removed
        present = {o.category_id for o in objects} | split.unlabelled.get(image.image_id, frozenset())
        positives: dict[int, tuple[CocoObject, ...]] = {}
        for cat_id in sorted(categories):
            targets = [o for o in objects if o.category_id == cat_id and not o.iscrowd]
            if targets:
                positives[cat_id] = cap_objects(targets, max_objects_per_query, image, problems)
        candidates = tuple(c for c in sorted(categories) if c not in present)
        if not positives and negative_count(len(candidates), negatives) == 0:
            problems.add("image_without_queries", image.describe())
            continue
        images.append(ImageQueries(image, positives, candidates))
    plan = QueryPlan(split, categories, images, negatives, max_objects_per_query, problems, skipped)
    if plan.num_positive == 0:
        raise DataError(
            "no_usable_queries",
            f"{split.annotation_file}: no usable queries: no image has a target of a queried category "
            f"({len(categories)} categories, {len(split.images)} usable images)",
        )
    return plan


def negative_count(candidates: int, negatives: Negatives) -> int:
    """How many negative queries an image with ``candidates`` absent categories gets."""
    if negatives == "all":
        return candidates
    if negatives == "none":
        return 0
    return min(int(negatives), candidates)


def choose_negatives(query: ImageQueries, negatives: Negatives, rng: np.random.Generator) -> list[int]:
    """The negative category ids of one image, ascending; k sampled without replacement from ``rng``."""
    candidates = query.negative_candidates
    k = negative_count(len(candidates), negatives)
    if k == len(candidates):
        return list(candidates)
    picked = rng.choice(len(candidates), size=k, replace=False)
    return sorted(candidates[i] for i in picked)


def _query_categories(
    split: CocoSplit,
    prompt_map: dict[str, str],
    keep_unused: bool,
    problems: ProblemReport,
    skipped: dict[int, str],
) -> dict[int, QueryCategory]:
    used = {o.category_id for objs in split.objects.values() for o in objs if not o.iscrowd}
    annotated = {o.category_id for objs in split.objects.values() for o in objs}
    names = split.categories
    known_keys = {str(i) for i in names} | set(names.values())
    unknown = sorted(k for k in prompt_map if k not in known_keys)
    if unknown:
        raise DataError(
            "missing_key",
            f"prompt map key(s) {', '.join(map(repr, unknown))} match no category id or name of "
            f"{split.annotation_file} (categories: {', '.join(sorted(set(names.values())))})",
        )
    result: dict[int, QueryCategory] = {}
    for cat_id in sorted(names):
        name = names[cat_id]
        if not keep_unused:
            kind = (
                "category_placeholder"
                if _is_placeholder(cat_id, split, annotated)
                else "category_unused"
                if cat_id not in used
                else None
            )
            if kind:
                problems.add(kind, f"category {cat_id} {name!r}")
                skipped[cat_id] = kind
                continue
        prompt = prompt_map.get(str(cat_id), prompt_map.get(name, clean_prompt(name)))
        if not prompt:
            raise DataError(
                "missing_key", f"{split.annotation_file}: category {cat_id} {name!r} gives an empty prompt"
            )
        result[cat_id] = QueryCategory(cat_id, name, prompt)
    _refuse_shared_prompts(
        [[c for c in result.values() if prompt_key(c.prompt) == key] for key in _shared_keys(result)],
        f"{split.annotation_file}: after cleaning",
    )
    return result


def prompt_key(prompt: str) -> str:
    """What a prompt says, ignoring case, punctuation and spacing (``"Car."`` and ``"car"`` agree)."""
    return re.sub(r"[\W_]+", " ", prompt).strip().casefold() or prompt


def _shared_keys(categories: dict[int, QueryCategory]) -> list[str]:
    keys: dict[str, int] = defaultdict(int)
    for category in categories.values():
        keys[prompt_key(category.prompt)] += 1
    return [key for key, n in keys.items() if n > 1]


def _refuse_shared_prompts(groups: list[list[QueryCategory]], where: str) -> None:
    if not groups:
        return
    shown = "; ".join(
        " and ".join(f"category {c.category_id} {c.name!r} -> {c.prompt!r}" for c in group)
        for group in groups[:5]
    )
    raise DataError(
        "prompt_collision",
        f"{where}, {len(groups)} group(s) of categories share a prompt: {shown}. The same prompt would "
        "be positive and negative on one image: merge the categories in the annotation file, or give "
        "each its own text in a prompt map (data.prompts: category name or id -> prompt)",
    )


def check_prompt_tokens(
    plan: QueryPlan, tokenize: Callable[[list[str]], tuple[torch.Tensor, torch.Tensor]], where: str
) -> None:
    """Check the plan's prompts against the model's ``tokenize`` (see ``sam3tune.data.Tokenize``).

    Raises :class:`DataError` ``prompt_collision`` when the tokenizer cuts prompts of two queried
    categories to the same token ids; counts ``prompt_truncated`` in ``plan.problems`` (and logs it)
    for prompts at or past the tokenizer's length: one more word does not change their ids. Distinct
    uncut prompts with equal ids (a hashing tokenizer's collision, see ``sam3tune.model.tokenizer``)
    are only logged.
    """
    categories = list(plan.categories.values())
    prompts = [c.prompt for c in categories]
    tokens = _token_rows(tokenize, prompts)
    is_cut = _cut_rows(tokenize, prompts, tokens)
    groups: dict[tuple[int, ...], list[QueryCategory]] = defaultdict(list)
    cut: set[int] = set()
    for category, row, row_cut in zip(categories, tokens, is_cut, strict=True):
        groups[row].append(category)
        if row_cut:
            cut.add(category.category_id)
            plan.problems.add(
                "prompt_truncated", f"category {category.category_id} {category.prompt!r} ({len(row)} tokens)"
            )
    shared = [g for g in groups.values() if len(g) > 1]
    _refuse_shared_prompts(
        [g for g in shared if any(c.category_id in cut for c in g)], f"{where}: once tokenized"
    )
    for group in shared:
        log.warning(
            "%s: the tokenizer gives the same ids to %s (the model cannot tell these prompts apart)",
            where,
            " and ".join(repr(c.prompt) for c in group),
        )
    if cut:
        log.warning(
            "%s: %d prompt(s) cut by the tokenizer: %s",
            where,
            len(cut),
            "; ".join(plan.problems.examples["prompt_truncated"][:5]),
        )


def prompts_cut(tokenize: Callable, prompts: Sequence[str]) -> tuple[dict[str, int], list[list[str]]]:
    """The prompts ``tokenize`` cuts to its length (prompt -> the tokens kept), and the groups of prompts
    that get the same ids once cut (the model cannot tell them apart)."""
    tokens = _token_rows(tokenize, prompts)
    is_cut = _cut_rows(tokenize, prompts, tokens)
    cut = {p: len(row) for p, row, c in zip(prompts, tokens, is_cut, strict=True) if c}
    groups: dict[tuple[int, ...], list[str]] = defaultdict(list)
    for prompt, row in zip(prompts, tokens, strict=True):
        groups[row].append(prompt)
    return cut, [g for g in groups.values() if len(g) > 1 and any(p in cut for p in g)]


def _cut_rows(tokenize: Callable, prompts: Sequence[str], tokens: list[tuple[int, ...]]) -> list[bool]:
    """Whether each prompt is at or past the tokenizer's length: one more word does not change its ids."""
    longer = _token_rows(tokenize, [f"{p} and more" for p in prompts])
    return [row == longer_row for row, longer_row in zip(tokens, longer, strict=True)]


def _token_rows(tokenize: Callable, prompts: Sequence[str]) -> list[tuple[int, ...]]:
    ids, mask = tokenize(list(prompts))
    return [
        tuple(int(t) for t, m in zip(r, k, strict=True) if m)
        for r, k in zip(ids.tolist(), mask.tolist(), strict=True)
    ]


def _is_placeholder(cat_id: int, split: CocoSplit, annotated: set[int]) -> bool:
    """Roboflow exports carry a category 0 named after the project (the other categories'
    supercategory) or repeating a real class, with no annotations."""
    if cat_id != 0 or cat_id in annotated:
        return False
    name = split.categories[0]
    others = [c for c in split.categories if c != 0]
    return any(name in (split.categories[c], split.supercategories[c]) for c in others)


def cap_objects(
    targets: list[CocoObject], cap: int, image: CocoImage, problems: ProblemReport
) -> tuple[CocoObject, ...]:
    """The ``cap`` largest of ``targets`` (in their order); the rest counted as ``objects_over_cap``."""
    if len(targets) <= cap:
        return tuple(targets)
    order = sorted(range(len(targets)), key=lambda i: (-targets[i].box_area, i))
    keep = sorted(order[:cap])
    problems.add(
        "objects_over_cap",
        f"{image.describe()} category {targets[0].category_id}: kept {cap} of {len(targets)}",
        count=len(targets) - cap,
    )
    return tuple(targets[i] for i in keep)
