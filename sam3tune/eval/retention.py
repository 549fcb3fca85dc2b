"""Retention: after tuning, does the model still answer the prompts it was *not* tuned on?

The starting model (zero-shot, the run's ``model.name``) is asked the retention prompts
(``retention.prompts``: concepts the user did not tune) on the evaluation images, and optionally on an
extra folder of unlabelled images (``retention.images``). Its detections with score >=
``retention.score_threshold`` are the **reference**: COCO ground truth whose categories are the
prompts. Any model's answers to the same prompts on the same images are then scored against it with
COCO AP: the **retention AP** (box and mask). The starting model itself scores 100 (its detections
above the threshold are its top-ranked answers and coincide with the reference; tested): a tuned model
at 100 answers those prompts exactly as the starting model did, one at 0 has lost them.

With labelled data for the retention prompts (``retention.data``, any format ``data.root`` takes),
the same prompts are also scored against the labels: **true AP** before and after, and their
false-fire rate (:mod:`sam3tune.eval.specificity`).

:class:`RetentionProbe` holds one measurement's prompts, images and reference; ``sam3tune eval``
builds it from the baseline, the trainer from the starting model before its first step.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import Dataset

from sam3tune.config import ConfigError, parse_yaml
from sam3tune.data import DataConfig, QueryPlan, Sample, Tokenize, build_eval_dataset
from sam3tune.data.images import ImageFileError, probe_image, read_rgb
from sam3tune.data.layout import resolves_inside
from sam3tune.data.queries import clean_prompt, prompt_key
from sam3tune.data.transforms import eval_geometry, transform_image
from sam3tune.data.yolo import IMAGE_SUFFIXES
from sam3tune.eval.coco_metrics import CocoMetrics, coco_metrics
from sam3tune.eval.config import EvalConfig, RetentionConfig
from sam3tune.eval.ground_truth import ground_truth_from_plan
from sam3tune.eval.rle import mask_areas
from sam3tune.eval.specificity import SpecificityMetrics

log = logging.getLogger(__name__)

Forward = Callable[..., dict[str, torch.Tensor]]


@dataclass(frozen=True)
class PromptImage:
    """An image the retention prompts are asked on: its id, file and size (after EXIF orientation)."""

    image_id: int
    path: Path
    height: int
    width: int


@dataclass
class RetentionMetrics:
    """Retention of one model on the retention prompts.

    ``coco``: COCO box / mask AP against the reference (the starting model's detections >=
    ``score_threshold``), keyed by IoU type; empty when the reference holds no object.
    ``reference_objects``: reference objects per prompt; ``images``: images asked (``extra_images`` of them
    from ``retention.images``). ``true`` / ``true_specificity``: against the labels of ``retention.data``
    (None without it). Values in [0, 1], None where undefined.
    """

    prompts: list[str]
    score_threshold: float
    images: int
    extra_images: int
    reference_objects: dict[str, int]
    coco: dict[str, CocoMetrics] = field(default_factory=dict)
    true: dict[str, CocoMetrics] | None = None
    true_specificity: SpecificityMetrics | None = None
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, float | None]:
        """``retention_bbox_AP``, ``retention_bbox_AP50``, ``retention_segm_AP`` ... and, with labels,
        ``retention_true_bbox_AP50`` ... and ``retention_false_fire_rate``."""
        out: dict[str, float | None] = {}
        for iou_type, m in self.coco.items():
            out.update({f"retention_{iou_type}_{k}": getattr(m, k) for k in ("AP", "AP50")})
        for iou_type, m in (self.true or {}).items():
            out.update({f"retention_true_{iou_type}_{k}": getattr(m, k) for k in ("AP", "AP50")})
        if self.true_specificity is not None:
            out["retention_false_fire_rate"] = self.true_specificity.false_fire_rate
        return out


def read_retention_prompts(value: list[str] | Path) -> list[str]:
    """``retention.prompts`` as a list of prompt texts: the list itself, or the file it names (a YAML
    list, or one prompt per line, ``#`` starts a comment). Raises :class:`ConfigError` naming the key."""
    if isinstance(value, Path):
        try:
            text = value.read_text(encoding="utf-8")
        except OSError as err:
            raise ConfigError(
                f"retention.prompts={str(value)!r}: cannot read it as a file of prompts ({err}); give "
                "a list such as [circle, square] or a file with one prompt per line"
            ) from err
        loaded = parse_yaml(text) if text.lstrip().startswith("-") else None
        lines = [line.split("#", 1)[0] for line in text.splitlines()]
        value = loaded if isinstance(loaded, list) else [line for line in lines if line.strip()]
    prompts = [clean_prompt(str(p)) for p in value]
    if any(not p for p in prompts):
        raise ConfigError(f"retention.prompts: empty prompt in {list(value)}")
    keys = [prompt_key(p) for p in prompts]
    repeated = sorted({p for p, k in zip(prompts, keys, strict=True) if keys.count(k) > 1})
    if repeated:
        raise ConfigError(f"retention.prompts: {repeated} given more than once")
    return prompts


def check_untuned(prompts: Sequence[str], tuned: Sequence[str], where: str) -> None:
    """Refuse retention prompts that are also tuned prompts (``where`` names the split)."""
    tuned_keys = {prompt_key(p) for p in tuned}
    both = [p for p in prompts if prompt_key(p) in tuned_keys]
    if both:
        raise ConfigError(
            f"retention.prompts {both} are also categories of {where}: retention measures the prompts "
            "the run does not tune; leave them out of retention.prompts"
        )


def split_images(plan: QueryPlan) -> list[PromptImage]:
    """The usable images of an evaluation plan."""
    return [PromptImage(q.image.image_id, q.image.path, q.image.height, q.image.width) for q in plan.images]


def folder_images(folder: Path, first_id: int, follow_symlinks: bool = False) -> list[PromptImage]:
    """The readable images directly in ``folder`` (sorted by name), numbered from ``first_id``. Unreadable
    files, and files resolving outside the folder (unless ``follow_symlinks``), are skipped and logged."""
    if not folder.is_dir():
        raise ConfigError(f"retention.images={str(folder)!r} is not a folder")
    found, skipped = [], []
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        if not follow_symlinks and not resolves_inside(os.path.realpath(path), folder):
            skipped.append(f"{path.name} (resolves outside the folder)")
            continue
        try:
            info = probe_image(path)
        except ImageFileError as err:
            skipped.append(f"{path.name} ({err.kind})")
            continue
        found.append(PromptImage(first_id + len(found), path, info.height, info.width))
    if skipped:
        log.warning("retention.images: %d file(s) skipped: %s", len(skipped), "; ".join(skipped[:5]))
    if not found:
        raise ConfigError(f"retention.images={str(folder)!r} holds no readable image")
    return found


class PromptQueries(Dataset):
    """Every prompt on every image (category id ``i + 1`` for ``prompts[i]``), resized as in evaluation,
    without targets: one :class:`~sam3tune.data.Sample` per image."""

    def __init__(self, images: Sequence[PromptImage], prompts: Sequence[str], resolution: int):
        self.images = list(images)
        self.prompts = list(prompts)
        self.geometry = eval_geometry(resolution)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Sample:
        image = self.images[index]
        pixels = transform_image(read_rgb(image.path, at_least=self.geometry.side), self.geometry)
        return Sample(
            image=pixels,
            image_id=image.image_id,
            orig_size=(image.height, image.width),
            category_ids=list(range(1, len(self.prompts) + 1)),
            prompts=list(self.prompts),
            targets=[{"boxes": torch.zeros(0, 4)} for _ in self.prompts],
        )


def resolve_prompts(config: RetentionConfig, default_split: str, progress: bool = False) -> list[str]:
    """The retention prompts: ``retention.prompts``, else the category prompts of ``retention.data``."""
    prompts = read_retention_prompts(config.prompts) if config.prompts else []
    labelled = _labelled_config(config, default_split)
    if not prompts and labelled is not None:
        plan = build_eval_dataset(labelled, progress=progress).plan
        prompts = [c.prompt for c in plan.categories.values()]
    if not prompts:
        raise ConfigError("retention needs retention.prompts (or retention.data with labels for them)")
    return prompts


def predict_prompts(
    forward: Forward,
    images: Sequence[PromptImage],
    prompts: Sequence[str],
    tokenize: Tokenize,
    resolution: int,
    eval_config: EvalConfig | None = None,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> list[dict]:
    """COCO results (category ``i + 1`` = ``prompts[i]``, every score kept, masks when ``eval_config``
    evaluates ``segm``) of ``forward(batch)`` for every prompt on every image."""
    from sam3tune.eval.model_eval import predict_batches, sample_loader

    eval_config = eval_config or EvalConfig()
    postprocess = dataclasses.replace(
        eval_config.postprocess, with_masks="segm" in eval_config.iou_types, score_threshold=0.0
    )
    loader = sample_loader(PromptQueries(images, prompts, resolution), tokenize, eval_config)
    results, _ = predict_batches(forward, loader, postprocess, device, progress)
    return results


def reference_ground_truth(
    images: Sequence[PromptImage], prompts: Sequence[str], results: Sequence[dict], score_threshold: float
) -> dict:
    """COCO ground truth made of the detections in ``results`` (category ``i + 1`` = ``prompts[i]``) with
    score >= ``score_threshold``. A detection whose mask is empty keeps its box only (mask metrics
    then ignore it, as an object without a mask)."""
    annotations = []
    for entry in results:
        if entry["score"] < score_threshold:
            continue
        x, y, w, h = entry["bbox"]
        ann = {
            "id": len(annotations) + 1,
            "image_id": entry["image_id"],
            "category_id": entry["category_id"],
            "bbox": [x, y, w, h],
            "area": float(w * h),
            "iscrowd": 0,
            "score": entry["score"],
        }
        segmentation = entry.get("segmentation")
        if segmentation is not None:
            area = float(mask_areas([segmentation])[0])
            if area > 0:
                ann["segmentation"], ann["area"] = segmentation, area
        annotations.append(ann)
    return {
        "images": [{"id": i.image_id, "height": i.height, "width": i.width} for i in images],
        "categories": [{"id": k + 1, "name": p} for k, p in enumerate(prompts)],
        "annotations": annotations,
    }


def reference_objects(reference: dict, image_ids: set[int] | None = None) -> list[tuple[int, str, list]]:
    """``(image_id, prompt, xywh box)`` of every reference object (on ``image_ids`` only, if given): the
    extra objects of a confusion table."""
    names = {c["id"]: c["name"] for c in reference["categories"]}
    return [
        (a["image_id"], names[a["category_id"]], a["bbox"])
        for a in reference["annotations"]
        if image_ids is None or a["image_id"] in image_ids
    ]


@dataclass
class RetentionProbe:
    """One retention measurement: prompts, images, the reference (COCO ground truth of the starting
    model's detections), and optionally labelled data for the prompts."""

    config: RetentionConfig
    prompts: list[str]
    images: list[PromptImage]
    extra_images: int
    reference: dict
    labelled: DataConfig | None = None

    @classmethod
    def build(
        cls,
        config: RetentionConfig,
        eval_images: Sequence[PromptImage],
        reference_model: Forward,
        tokenize: Tokenize,
        resolution: int,
        tuned_prompts: Sequence[str],
        default_split: str = "valid",
        eval_config: EvalConfig | None = None,
        device: torch.device | str = "cpu",
        progress: bool = False,
    ) -> tuple[RetentionProbe, list[dict]]:
        """The probe whose reference is ``reference_model``'s detections (``forward(batch)``, eval mode),
        and the COCO results that reference was made from (every score). ``eval_images``: the evaluation
        images; ``retention.images`` adds its folder's; ``tuned_prompts``: the prompts the run tunes
        (refused as retention prompts); ``default_split``: the split of ``retention.data`` when
        ``retention.split`` is not set (the evaluation split)."""
        labelled = _labelled_config(config, default_split)
        prompts = resolve_prompts(config, default_split, progress)
        check_untuned(prompts, tuned_prompts, "the tuned data")
        images = list(eval_images)
        extra = []
        if config.images is not None:
            first = max((i.image_id for i in images), default=0) + 1
            extra = folder_images(Path(config.images), first)
        probe = cls(config, prompts, images + extra, len(extra), {}, labelled)
        results = probe.predict(reference_model, tokenize, resolution, eval_config, device, progress)
        probe.reference = reference_ground_truth(probe.images, prompts, results, config.score_threshold)
        return probe, results

    def predict(
        self,
        forward: Forward,
        tokenize: Tokenize,
        resolution: int,
        eval_config: EvalConfig | None = None,
        device: torch.device | str = "cpu",
        progress: bool = False,
    ) -> list[dict]:
        """COCO results of ``forward`` for every retention prompt on every image (all scores kept)."""
        return predict_prompts(
            forward, self.images, self.prompts, tokenize, resolution, eval_config, device, progress
        )

    def measure(
        self,
        forward: Forward,
        tokenize: Tokenize,
        resolution: int,
        eval_config: EvalConfig | None = None,
        device: torch.device | str = "cpu",
        progress: bool = False,
        results: list[dict] | None = None,
    ) -> tuple[RetentionMetrics, list[dict]]:
        """The retention metrics of ``forward`` and its COCO results on the retention prompts (``results``:
        already computed ones, e.g. the reference model's own)."""
        from sam3tune.eval.model_eval import eval_loader, score_batches

        eval_config = eval_config or EvalConfig()
        if results is None:
            results = self.predict(forward, tokenize, resolution, eval_config, device, progress)
        metrics = self.score(results, eval_config.iou_types)
        if self.labelled is not None:
            dataset = build_eval_dataset(
                dataclasses.replace(self.labelled, resolution=resolution, masks=False), progress=progress
            )
            true, _ = score_batches(
                forward,
                eval_loader(dataset, tokenize, eval_config),
                ground_truth_from_plan(dataset.plan),
                eval_config,
                device,
                progress,
            )
            metrics.true, metrics.true_specificity = true.coco, true.specificity
            labelled = sorted(c["name"] for c in ground_truth_from_plan(dataset.plan)["categories"])
            if set(labelled) != set(self.prompts):
                metrics.notes.append(
                    f"retention.data is labelled for {labelled}, retention.prompts are {self.prompts}"
                )
        return metrics, results

    def score(self, results: Sequence[dict], iou_types: Sequence[str]) -> RetentionMetrics:
        """Retention AP of ``results`` (category ``i + 1`` = ``prompts[i]``) against the reference."""
        counts = dict.fromkeys(self.prompts, 0)
        for ann in self.reference["annotations"]:
            counts[self.prompts[ann["category_id"] - 1]] += 1
        metrics = RetentionMetrics(
            prompts=list(self.prompts),
            score_threshold=self.config.score_threshold,
            images=len(self.images),
            extra_images=self.extra_images,
            reference_objects=counts,
        )
        if not self.reference["annotations"]:
            metrics.notes.append(
                f"the starting model finds nothing for {self.prompts} at score >= "
                f"{self.config.score_threshold} on these images: no reference, retention AP undefined"
            )
            return metrics
        usable = [t for t in iou_types if t == "bbox" or all("segmentation" in r for r in results)]
        metrics.coco = {t: coco_metrics(self.reference, results, t) for t in usable}
        return metrics


def _labelled_config(config: RetentionConfig, default_split: str) -> DataConfig | None:
    """The ``DataConfig`` of ``retention.data`` (its split ``retention.split``, else ``default_split``),
    or None."""
    if config.data is None:
        return None
    return DataConfig(root=Path(config.data), val=config.split or default_split)
