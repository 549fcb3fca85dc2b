"""``QueryDataset``: one sample = one image with all its queries (positives + chosen negatives).

Determinism: every random choice of sample ``index`` in ``epoch`` (resize side, pad offset,
flip, which k negatives, which exemplars) comes from ``numpy.random.SeedSequence([seed, epoch, index])``
and nothing else: three independent child streams, for the geometry, the negatives and the exemplars.
So a sample is a pure function of ``(seed, epoch, index)``: the number of DataLoader workers,
the process, and how far a previous run got do not matter. To resume exactly, give the dataset
the same ``seed``, call ``set_epoch(epoch)`` on it (and on the sampler, e.g. a
``DistributedSampler`` with the same seed) before iterating, and skip the batches already done.
``set_epoch`` reaches the workers because DataLoader copies the dataset into them when an
iterator is created: do not use ``persistent_workers=True`` with ``set_epoch``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from sam3tune.data.coco import CocoImage, CocoObject, load_split
from sam3tune.data.config import DataConfig
from sam3tune.data.exemplars import VISUAL_PROMPT, ExemplarDraw, draw_exemplars
from sam3tune.data.hf_datasets import hf_source
from sam3tune.data.images import read_rgb
from sam3tune.data.layout import SplitFiles, resolve_split
from sam3tune.data.masks import SegmentationError, decode_segmentation
from sam3tune.data.problems import CATALOGUE, DataError
from sam3tune.data.queries import QueryPlan, choose_negatives, load_prompt_map, plan_queries
from sam3tune.data.regions import read_window
from sam3tune.data.retention_queries import RetentionQueries, RetentionQuery
from sam3tune.data.shots import sample_shots
from sam3tune.data.tiling import tile_plan
from sam3tune.data.transforms import (
    Geometry,
    MaskSampler,
    eval_geometry,
    nonempty_boxes,
    sample_train_geometry,
    transform_boxes,
    transform_image,
)

log = logging.getLogger(__name__)


def read_pixels(image: CocoImage, at_least: int | None = None) -> Image.Image:
    """The RGB pixels of a usable image, or of a tile's window of its file (see
    :func:`~sam3tune.data.images.read_rgb` for ``at_least``)."""
    if image.window is not None:
        return read_window(image.path, image.window, at_least)
    return read_rgb(image.path, at_least=at_least)


def sample_rngs(
    seed: int, epoch: int, index: int
) -> tuple[np.random.Generator, np.random.Generator, np.random.Generator]:
    """The independent (geometry, negatives, exemplars) generators of sample ``index`` in ``epoch``.

    Children of ``SeedSequence([seed, epoch, index])``; the first two are those of earlier versions, which
    spawned only two, so adding the exemplar stream changed no existing sample."""
    seeds = np.random.SeedSequence([seed, epoch, index]).spawn(3)
    return tuple(np.random.default_rng(s) for s in seeds)


def count_exemplar_queries(plan: QueryPlan, config: DataConfig, seed: int = 0, epoch: int = 0) -> int:
    """How many positive queries of the training dataset ``(plan, config, seed)`` become exemplar queries
    in ``epoch`` (before any is dropped by the transforms); no image is read."""
    return sum(
        len(draw_exemplars(q.positives, config.exemplars, sample_rngs(seed, epoch, i)[2]))
        for i, q in enumerate(plan.images)
    )


@dataclass
class Sample:
    """One image and its queries, as ``QueryDataset[i]`` returns it.

    ``image`` is the ``(3, S, S)`` uint8 canvas (normalised by the collate); ``targets`` hold one
    dict per query in the format of ``sam3tune.loss`` (``boxes`` (n, 4) cxcywh in [0, 1], and with
    masks ``masks`` (n, M, M) bool + ``is_valid_mask`` (n,) bool). ``dropped`` counts what the
    transforms removed: ``empty_objects`` (boxes that became empty), ``empty_queries`` (positive
    queries left with no object), ``empty_masks`` (masks with no pixel at the target resolution,
    marked invalid), ``empty_exemplar_queries`` (exemplar queries dropped because the transform removed
    a positive exemplar's object), ``empty_negative_exemplars`` (negative exemplars left out for that
    reason).

    ``exemplar_boxes`` / ``exemplar_labels``: per query, ``(k, 4)`` float32 cxcywh in [0, 1] (same
    canvas as the targets) and ``(k,)`` int64 (1 positive, 0 negative); ``k = 0`` for a text query.
    Empty lists mean no query of the sample has exemplars.

    ``supervised`` / ``distilled``: per query, whether the criterion sees it and whether it gets the
    distillation loss (the forgetting remedies, :mod:`sam3tune.data.retention_queries`); empty lists mean
    every query is supervised and none distilled.
    """

    image: torch.Tensor
    image_id: int
    orig_size: tuple[int, int]
    category_ids: list[int]
    prompts: list[str]
    targets: list[dict[str, torch.Tensor]]
    dropped: dict[str, int] = field(default_factory=dict)
    exemplar_boxes: list[torch.Tensor] = field(default_factory=list)
    exemplar_labels: list[torch.Tensor] = field(default_factory=list)
    supervised: list[bool] = field(default_factory=list)
    distilled: list[bool] = field(default_factory=list)


class QueryDataset(Dataset):
    """Map-style dataset over the images of a :class:`QueryPlan` (see module docstring).

    ``train``: negatives as ``config.negatives`` (else all) and, with ``augment`` (default: ``train``),
    the random training geometry (else the evaluation resize). ``retention``: the queries the forgetting
    remedies add to each image (training only; :mod:`sam3tune.data.retention_queries`).
    """

    def __init__(
        self,
        plan: QueryPlan,
        config: DataConfig,
        train: bool,
        seed: int = 0,
        augment: bool | None = None,
        retention: RetentionQueries | None = None,
    ):
        self.plan = plan
        self.retention = retention if train else None
        self.config = config
        self.train = train
        self.augment = train if augment is None else augment and train
        self.seed = seed
        self.epoch = 0
        self.with_masks = config.masks and plan.has_masks

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose augmentations and negatives ``__getitem__`` produces."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.plan.images)

    def rngs(self, index: int) -> tuple[np.random.Generator, np.random.Generator, np.random.Generator]:
        """The (geometry, negatives, exemplars) generators of sample ``index`` in the current epoch."""
        return sample_rngs(self.seed, self.epoch, index)

    def exemplar_draws(self, index: int) -> dict[int, ExemplarDraw]:
        """The exemplar queries of sample ``index`` in the current epoch (training only)."""
        if not self.train:
            return {}
        return draw_exemplars(self.plan.images[index].positives, self.config.exemplars, self.rngs(index)[2])

    def geometry(self, index: int) -> Geometry:
        """The geometry of sample ``index`` in the current epoch (without augmentation: plain square
        resize)."""
        if not self.augment:
            return eval_geometry(self.config.resolution)
        return sample_train_geometry(self.rngs(index)[0], self.config.resolution, self.config.hflip)

    def __getitem__(self, index: int) -> Sample:
        query = self.plan.images[index]
        image = query.image
        geometry = self.geometry(index)
        negatives = self.config.negatives if self.train else "all"
        hard = (
            self.retention.hard_negatives.get(image.image_id, frozenset()) if self.retention else frozenset()
        )
        chosen = set(choose_negatives(query, negatives, self.rngs(index)[1]))
        chosen |= hard & set(query.negative_candidates)  # confusable negatives are always asked
        category_ids = sorted([*query.positives, *chosen])
        try:
            pixels = transform_image(read_pixels(image, at_least=geometry.side), geometry)
        except (OSError, SyntaxError, ValueError) as err:
            raise DataError(
                "image_unreadable", f"{image.path}: {image.describe()} cannot be read: {err}"
            ) from err
        sampler = None
        if self.with_masks:
            mask_side = self.config.target_mask_resolution
            sampler = MaskSampler.build(image.height, image.width, geometry, mask_side)
        dropped = {"empty_objects": 0, "empty_queries": 0, "empty_masks": 0}
        draws = self.exemplar_draws(index)
        if draws:
            dropped.update(empty_exemplar_queries=0, empty_negative_exemplars=0)
        sample = Sample(
            image=pixels,
            image_id=image.image_id,
            orig_size=(image.height, image.width),
            category_ids=[],
            prompts=[],
            targets=[],
            dropped=dropped,
        )
        no_exemplar = torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64)
        for cat_id in category_ids:
            objects = query.positives.get(cat_id, ())
            target, kept = self._target(objects, image, geometry, sampler, dropped)
            if objects and len(target["boxes"]) == 0:
                dropped["empty_queries"] += 1
                continue
            prompt = self.plan.categories[cat_id].prompt
            exemplars = no_exemplar
            if cat_id in draws:
                exemplars = self._exemplars(draws[cat_id], kept, target, image, geometry, dropped)
                if exemplars is None:
                    dropped["empty_exemplar_queries"] += 1
                    continue
                prompt = prompt if self.config.exemplars.keep_text else VISUAL_PROMPT
            _add_query(sample, cat_id, prompt, target, exemplars)
        if self.retention is not None:
            self._add_retention_queries(
                sample, index, query.positives, hard, image, geometry, sampler, no_exemplar
            )
        if not draws:
            sample.exemplar_boxes, sample.exemplar_labels = [], []
        return sample

    def _retention_asked(self, image_id: int, index: int) -> tuple[RetentionQuery, ...]:
        """The retention queries of image ``image_id`` (sample ``index``) in this epoch: all, or
        ``retention.sampled`` of them drawn from the sample's own stream (a pure function of the seed, the
        epoch and the index, like every other choice)."""
        asked = self.retention.per_image.get(image_id, ())
        k = self.retention.sampled
        if not k or len(asked) <= k:
            return asked
        seeds = np.random.SeedSequence([self.seed, self.epoch, index]).spawn(4)[3]  # after sample_rngs' 3
        picked = np.random.default_rng(seeds).choice(len(asked), size=k, replace=False)
        return tuple(asked[i] for i in sorted(picked))

    def _add_retention_queries(
        self,
        sample: Sample,
        index: int,
        positives: dict[int, tuple[CocoObject, ...]],
        hard: frozenset[int],
        image: CocoImage,
        geometry: Geometry,
        sampler: MaskSampler | None,
        no_exemplar: tuple[torch.Tensor, torch.Tensor],
    ) -> None:
        """Append the remedies' queries to ``sample``: the repeats of its confusable negatives, then its
        retention queries (replay and / or distillation), flagging which are supervised and distilled."""
        retention = self.retention
        sample.supervised = [True] * len(sample.prompts)
        sample.distilled = [False] * len(sample.prompts)
        empty = self._target((), image, geometry, sampler, sample.dropped)[0]
        plain = (True, False)
        for cat_id in [c for c in sample.category_ids if c in hard and c not in positives]:
            for _ in range(retention.repeats):
                _add_query(sample, cat_id, self.plan.categories[cat_id].prompt, empty, no_exemplar, plain)
        for asked in self._retention_asked(image.image_id, index):
            target, _ = self._target(asked.objects, image, geometry, sampler, sample.dropped)
            supervised = asked.supervised
            if asked.objects and len(target["boxes"]) == 0:  # the transform removed every pseudo-label
                sample.dropped["empty_queries"] += 1
                if not asked.distilled:
                    continue
                supervised = False
            prompt = retention.categories[asked.category_id].prompt
            flags = (supervised, asked.distilled)
            _add_query(sample, asked.category_id, prompt, target, no_exemplar, flags)
            if supervised and not asked.objects and asked.category_id in hard:
                for _ in range(retention.repeats):
                    _add_query(sample, asked.category_id, prompt, empty, no_exemplar, plain)

    def _exemplars(
        self,
        draw: ExemplarDraw,
        kept: np.ndarray,
        target: dict[str, torch.Tensor],
        image: CocoImage,
        geometry: Geometry,
        dropped: dict[str, int],
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The transformed exemplar boxes ``(k, 4)`` and labels ``(k,)`` of one query, positives first;
        None when the transform removed a positive exemplar's object (the query is then dropped).

        ``kept`` (n,) bool says which of the query's objects survived the transform; the target boxes are
        those survivors, so a positive exemplar's box is its object's target box."""
        if not all(kept[i] for i in draw.positives):
            return None
        target_row = np.cumsum(kept) - 1
        positives = target["boxes"][[int(target_row[i]) for i in draw.positives]]
        negatives = transform_boxes(
            np.array([o.box for o in draw.negatives]).reshape(-1, 4), image.width, image.height, geometry
        )
        keep = nonempty_boxes(negatives, geometry.resolution)
        dropped["empty_negative_exemplars"] += int((~keep).sum())
        negatives = negatives[keep]
        labels = torch.cat(
            [torch.ones(len(positives), dtype=torch.int64), torch.zeros(len(negatives), dtype=torch.int64)]
        )
        return torch.cat([positives, negatives]), labels

    def _target(
        self,
        objects: Sequence[CocoObject],
        image: CocoImage,
        geometry: Geometry,
        sampler: MaskSampler | None,
        dropped: dict[str, int],
    ) -> tuple[dict[str, torch.Tensor], np.ndarray]:
        """The target dict of one query (boxes, and masks + validity when ``sampler`` is set) and which
        of ``objects`` it kept ((n,) bool)."""
        boxes = transform_boxes(np.array([o.box for o in objects]), image.width, image.height, geometry)
        keep = nonempty_boxes(boxes, geometry.resolution)
        dropped["empty_objects"] += int((~keep).sum())
        target = {"boxes": boxes[keep]}
        if sampler is None:
            return target, keep.numpy()
        side = self.config.target_mask_resolution
        kept = [o for o, k in zip(objects, keep.tolist(), strict=True) if k]
        masks = np.zeros((len(kept), side, side), dtype=bool)
        valid = np.zeros(len(kept), dtype=bool)
        for i, obj in enumerate(kept):
            if obj.segmentation is None:
                continue
            try:
                crop = decode_segmentation(obj.segmentation, image.height, image.width)
            except SegmentationError as err:
                raise DataError(
                    "segmentation_malformed", f"{image.path}: annotation {obj.annotation_id}: {err}"
                ) from err
            valid[i] = sampler.paste(crop.mask, masks[i], crop.top, crop.left)
            dropped["empty_masks"] += int(not valid[i])
        target["masks"] = torch.from_numpy(masks)
        target["is_valid_mask"] = torch.from_numpy(valid)
        return target, keep.numpy()


def _add_query(
    sample: Sample,
    category_id: int,
    prompt: str,
    target: dict[str, torch.Tensor],
    exemplars: tuple[torch.Tensor, torch.Tensor],
    flags: tuple[bool, bool] | None = None,
) -> None:
    """Append one query to ``sample``; ``flags`` (supervised, distilled) when the sample keeps them."""
    sample.category_ids.append(category_id)
    sample.prompts.append(prompt)
    sample.targets.append(target)
    sample.exemplar_boxes.append(exemplars[0])
    sample.exemplar_labels.append(exemplars[1])
    if flags is not None:
        sample.supervised.append(flags[0])
        sample.distilled.append(flags[1])


def load_plan(
    config: DataConfig,
    split: str,
    image_dir: str | Path | None = None,
    train: bool = True,
    progress: bool = True,
) -> QueryPlan:
    """Load, validate and plan the queries of ``split`` of ``config.root``.

    Training plans use ``config.negatives`` and, with ``config.shots``, the K-shot sample of the split
    (:mod:`sam3tune.data.shots`); evaluation plans query every category ("all") of the whole split.
    """
    if config.root is None:
        raise DataError(
            "dataset_missing", "data.root is not set: point it at a dataset folder or a COCO JSON file"
        )
    split_files = resolve_split(config.root, split, image_dir, config.hf_bbox_format)
    _refuse_options_of_other_kinds(config, split_files, image_dir)
    coco = load_split(split_files, progress=progress, follow_symlinks=config.follow_symlinks)
    sample = None
    if train and config.shots is not None:
        coco, sample = sample_shots(coco, config.shots, config.shots_seed, config.shots_rule)
        if not coco.images:
            raise DataError(
                "no_usable_queries",
                f"{split_files.annotation_file}: the {sample.describe()}: no image fits (with "
                "data.shots_rule=instance an image is taken only when all its objects of the category fit "
                "in K; use a larger data.shots or data.shots_rule=image)",
            )
        log.info("%s: %s", split_files.annotation_file, sample.describe())
    plan = plan_queries(
        coco,
        negatives=config.negatives if train else "all",
        max_objects_per_query=config.max_objects_per_query,
        prompt_map=load_prompt_map(config.prompts) if config.prompts else None,
        keep_unused_categories=config.keep_unused_categories,
    )
    plan.shots = sample
    plan.problems.log(str(split_files.annotation_file))
    return plan


def _refuse_options_of_other_kinds(config: DataConfig, split: SplitFiles, image_dir) -> None:
    """Options of one dataset kind given for another are refused, not ignored (``option_not_applicable``)."""
    key = "train_images" if image_dir is not None and image_dir == config.train_images else "val_images"
    if split.yolo is not None and image_dir is not None:
        raise DataError(
            "option_not_applicable",
            f"data.{key}={image_dir}: the image folder of a COCO JSON file; {config.root} is a YOLO dataset "
            "whose images data.yaml (or images/) names. Remove the option",
        )
    if hf_source(config.root) is None and config.hf_bbox_format != DataConfig().hf_bbox_format:
        raise DataError(
            "option_not_applicable",
            f"data.hf_bbox_format={config.hf_bbox_format}: the box format of Hugging Face datasets; "
            f"{config.root} is not one (COCO boxes are x, y, width, height). Remove the option",
        )


def build_train_dataset(
    config: DataConfig, seed: int = 0, progress: bool = True, augment: bool = True
) -> QueryDataset:
    """The training dataset of ``config`` (split ``config.train``, ``config.negatives``): train
    transforms, or with ``augment=False`` the evaluation resize. With ``data.tiling`` on (and
    ``tiling.train``), images larger than a tile become tiles (:func:`~sam3tune.data.tiling.tile_plan`,
    empty tiles chosen with ``seed``)."""
    plan = load_plan(config, config.train, config.train_images, train=True, progress=progress)
    if config.tiling.enabled and config.tiling.train:
        plan = tile_plan(plan, config.tiling, seed=seed)
        log.info("%s: %s", plan.split.annotation_file, plan.tiling.line())
        for kind in ("tile_object_lost",):
            if plan.problems[kind]:
                log.warning(
                    "%s: %d x %s (e.g. %s)",
                    plan.split.annotation_file,
                    plan.problems[kind],
                    CATALOGUE[kind][1],
                    "; ".join(plan.problems.examples[kind]),
                )
    return QueryDataset(plan, config, train=True, seed=seed, augment=augment)


def build_eval_dataset(config: DataConfig, split: str | None = None, progress: bool = True) -> QueryDataset:
    """An evaluation dataset (split ``config.val`` unless given; eval transforms, all negatives)."""
    image_dir = config.val_images if split is None else None
    plan = load_plan(config, split or config.val, image_dir, train=False, progress=progress)
    return QueryDataset(plan, config, train=False)
