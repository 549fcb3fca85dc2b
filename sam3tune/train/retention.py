"""Fine-tune without forgetting: the remedies of ``retention.*`` built for a run (docs/train.md).

Before the first step the starting model is asked the retention prompts (and, for
``confusable.from_start``, the tuned ones) on every training image, resized as in evaluation. From its
answers (kept in the run, ``RunDir.retention_detections_file``, which a resumed run reads back, so its
queries are the same):

- **replay** (``retention.replay.enabled``): its confident detections become pseudo-labelled queries of
  the official criterion, its empty answers negative ones (:mod:`sam3tune.data.retention_queries`);
- **distillation** (``retention.distill.weight``): every retention prompt on every training image is
  also answered by the teacher (:class:`~sam3tune.model.teacher.Teacher`: under LoRA the same network with
  its adapters off, else a frozen copy), and :mod:`sam3tune.loss.distillation` pulls the tuned answers
  towards its answers;
- **confusable negatives** (``retention.confusable.repeats``): negative queries on images that hold what
  their prompt is confused with (``pairs``, an ``eval.json``'s confusion table, or the starting model's on
  the training images) are asked more often.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from sam3tune.config import ConfigError
from sam3tune.data import Batch, QueryDataset, QueryPlan, Tokenize
from sam3tune.data.retention_queries import (
    RetentionQueries,
    hard_negatives,
    parse_pairs,
    retention_categories,
    retention_queries,
)
from sam3tune.eval.config import EvalConfig
from sam3tune.eval.confusion import confusion_table
from sam3tune.eval.ground_truth import ground_truth_from_plan
from sam3tune.eval.model_eval import eval_mode, module_forward
from sam3tune.eval.retention import PromptImage, check_untuned, predict_prompts, resolve_prompts
from sam3tune.json_file import read_json
from sam3tune.loss.distillation import distillation_terms
from sam3tune.loss.predictions import select_queries
from sam3tune.model.teacher import Teacher
from sam3tune.output_files import write_text_atomic
from sam3tune.run_dir import RunDir
from sam3tune.train.config import TrainConfig
from sam3tune.train.distributed import DistributedContext, broadcast_object

log = logging.getLogger(__name__)

_FINAL_KEYS = ("pred_logits", "pred_boxes", "presence_logits", "pred_masks")


class Distiller:
    """The distillation of one run: the teacher's answers to a batch's distilled queries, and the terms."""

    def __init__(self, teacher: Teacher, weight: float, mask_score: float):
        self.teacher, self.weight, self.mask_score = teacher, weight, mask_score

    def teacher_outputs(self, batch: Batch) -> dict | None:
        """The teacher's outputs for the batch's distilled queries (None when it has none). Call it before
        the student's forward of the step."""
        rows = _distilled_rows(batch)
        if rows is None:
            return None
        inputs = batch.model_inputs()
        for key in ("image_index", "input_ids", "attention_mask", "exemplar_boxes", "exemplar_labels"):
            if inputs[key] is not None:
                inputs[key] = inputs[key].index_select(0, rows.to(inputs[key].device))
        return self.teacher(**inputs)

    def terms(self, outputs: dict, batch: Batch, teacher_outputs: dict) -> dict[str, Tensor]:
        """The distillation terms (``distill`` their weighted sum) of the student's ``outputs``."""
        student = select_queries({k: outputs[k] for k in _FINAL_KEYS if k in outputs}, _distilled_rows(batch))
        return distillation_terms(student, teacher_outputs, self.weight, self.mask_score)


def _distilled_rows(batch: Batch) -> Tensor | None:
    if batch.distilled is None or not bool(batch.distilled.any()):
        return None
    return batch.distilled.nonzero().squeeze(1)


def extra_queries_per_image(config: TrainConfig, dataset: QueryDataset) -> int:
    """At most how many queries the remedies add to one image of ``dataset``: every retention prompt
    (replay, distillation) and the repeats of its negatives (confusable negatives; counted for every
    category, an upper bound)."""
    retention = config.retention
    if not retention.remedies:
        return 0
    plan = dataset.plan
    prompts = len(resolve_prompts(retention, config.data.val)) if retention.enabled else 0
    asked = prompts if retention.distill.weight > 0 or retention.replay.enabled else 0
    if retention.prompts_per_image:
        asked = min(asked, retention.prompts_per_image)
    return asked + retention.confusable.repeats * (len(plan.categories) + asked)


def save_detections(queries: RetentionQueries, path: Path) -> None:
    """Write the starting model's answers the remedies were made from to ``path`` (a run's
    ``RunDir.retention_detections_file``; a resumed run reads them back with :func:`saved_detections`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(queries.detections))


def saved_detections(run_dir: Path | None) -> list[dict] | None:
    """The starting model's answers saved in the run ``run_dir`` (None for a new run or when absent)."""
    if run_dir is None or not RunDir(run_dir).retention_detections_file.is_file():
        return None
    return read_json(RunDir(run_dir).retention_detections_file, "the starting model's answers")


def retention_setup(
    config: TrainConfig,
    model: nn.Module,
    tokenize: Tokenize,
    resolution: int,
    dataset: QueryDataset,
    frozen_dtype: torch.dtype,
    context: DistributedContext,
    saved: list[dict] | None = None,
) -> tuple[QueryDataset, Distiller | None]:
    """The training dataset with the queries of the remedies ``config.retention`` asks for (its
    ``retention``), built with the starting ``model`` (before any step), and the distiller (None when
    distillation is off); ``dataset`` itself and None when no remedy is on. ``saved``: the starting model's
    answers of this run read back on resume (else the main process computes them, and shares them)."""
    retention = config.retention
    if not retention.remedies:
        return dataset, None
    plan = dataset.plan
    tuned = [c.prompt for c in plan.categories.values()]
    prompts = resolve_prompts(retention, config.data.val) if retention.enabled else []
    check_untuned(prompts, tuned, f"the training split {plan.split.annotation_file}")
    categories = retention_categories(plan, prompts)
    asked = {c.category_id: c.prompt for c in categories.values()}
    if retention.confusable.repeats and retention.confusable.from_start:
        asked.update({c.category_id: c.prompt for c in plan.categories.values()})
    detections = saved
    if detections is None:
        if context.is_main:
            detections = _starting_answers(model, tokenize, resolution, plan, asked, config, context.device)
        detections = broadcast_object(detections, context)
    queries_from = [d for d in detections if d["category_id"] in categories]
    queries = retention_queries(
        plan,
        categories,
        queries_from,
        replay=retention.replay.enabled,
        distill=retention.distill.weight > 0,
        score_threshold=retention.score_threshold,
        negative_threshold=retention.replay.negative_threshold,
    )
    queries.detections = list(detections)
    queries.sampled = retention.prompts_per_image
    if retention.confusable.repeats:
        _add_confusable_negatives(queries, config, dataset, categories, detections)
    log.info(
        "retention remedies: %d prompt(s) %s; replay %d pseudo-labelled object(s), %d uncertain pair(s) left "
        "unasked; distillation %s; %d image(s) with confusable negatives asked %d more time(s)",
        len(prompts),
        prompts,
        queries.objects,
        queries.uncertain,
        f"weight {retention.distill.weight}" if retention.distill.weight > 0 else "off",
        len(queries.hard_negatives),
        queries.repeats,
    )
    with_queries = QueryDataset(
        plan, dataset.config, train=True, seed=dataset.seed, augment=dataset.augment, retention=queries
    )
    distiller = None
    if retention.distill.weight > 0:
        teacher = Teacher(model, frozen_dtype).to(context.device)
        if teacher.extra_bytes:
            log.info("distillation: frozen copy of the starting model, %.1f MiB", teacher.extra_bytes / 2**20)
        distiller = Distiller(teacher, retention.distill.weight, retention.score_threshold)
    return with_queries, distiller


def _starting_answers(
    model: nn.Module,
    tokenize: Tokenize,
    resolution: int,
    plan: QueryPlan,
    asked: dict[int, str],
    config: TrainConfig,
    device: torch.device,
) -> list[dict]:
    """The starting model's COCO results for the prompts ``asked`` (category id -> prompt) on every training
    image (eval resize, every score, masks when the training data has them)."""
    images = [PromptImage(q.image.image_id, q.image.path, q.image.height, q.image.width) for q in plan.images]
    ids = list(asked)
    eval_config = EvalConfig(
        batch_size=config.val.eval.batch_size,
        num_workers=config.val.eval.num_workers,
        iou_types=["bbox", "segm"] if config.data.masks and plan.has_masks else ["bbox"],
    )
    model.to(device)
    with eval_mode(model):
        results = predict_prompts(
            module_forward(model), images, [asked[i] for i in ids], tokenize, resolution, eval_config, device,
            progress=True,
        )  # fmt: skip
    for entry in results:
        entry["category_id"] = ids[entry["category_id"] - 1]
    return results


def _add_confusable_negatives(
    queries: RetentionQueries,
    config: TrainConfig,
    dataset: QueryDataset,
    categories: dict,
    detections: Sequence[dict],
) -> None:
    """Fill ``queries.hard_negatives`` / ``repeats`` from the configured confusion pairs."""
    confusable = config.retention.confusable
    plan = dataset.plan
    names = [c.prompt for c in plan.categories.values()] + [c.prompt for c in categories.values()]
    try:
        pairs = parse_pairs(confusable.pairs, names)
    except ValueError as err:
        raise ConfigError(f"retention.confusable.pairs: {err}") from err
    if confusable.from_eval is not None:
        pairs |= _pairs_from_eval(Path(confusable.from_eval), confusable.min_count, set(names))
    threshold = config.retention.score_threshold
    found: dict[int, set[str]] = {}
    for d in detections:
        if d["category_id"] in categories and d["score"] >= threshold:
            found.setdefault(d["image_id"], set()).add(categories[d["category_id"]].prompt)
    if confusable.from_start:
        gt = ground_truth_from_plan(plan)
        names_of = {c.category_id: c.prompt for c in plan.categories.values()}
        gt["categories"] = [{"id": i, "name": n} for i, n in names_of.items()]
        tuned = [d for d in detections if d["category_id"] in names_of]
        extra = [
            (d["image_id"], categories[d["category_id"]].prompt, d["bbox"])
            for d in detections
            if d["category_id"] in categories and d["score"] >= threshold
        ]
        table = confusion_table(gt, tuned, threshold, extra_objects=extra)
        pairs |= {(p, c) for p, c, n in table.pairs() if n >= confusable.min_count}
    if not pairs:
        log.warning("retention.confusable.repeats=%d but no confusable pair was found", confusable.repeats)
    queries.hard_negatives = hard_negatives(plan, queries, pairs, found)
    queries.repeats = confusable.repeats
    log.info("confusable pairs: %s", ", ".join(f"{p} -> {c}" for p, c in sorted(pairs)) or "none")


def _pairs_from_eval(path: Path, min_count: int, known: set[str]) -> set[tuple[str, str]]:
    """The (prompt, other) pairs of the evaluated model's confusion table in an ``eval.json`` with at least
    ``min_count`` detections, restricted to prompts of this run."""
    try:
        report = json.loads(path.read_text())
        counts = report["model"]["metrics"]["confusion"]["counts"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ConfigError(
            f"retention.confusable.from_eval={str(path)!r}: not an eval.json with a confusion table ({err})"
        ) from err
    return {(p, c) for p, row in counts.items() for c, n in row.items() if n >= min_count and {p, c} <= known}
