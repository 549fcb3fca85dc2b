"""The exemplar protocol: prompt each (image, category) with one of its own boxes, score every object.

For every image and every queried category with at least one (non-crowd) object on it, one of those
objects is chosen (seeded by ``(seed, image id, category id)``, so the choice does not depend on the
order or batching) and its box is the query's only, positive, exemplar; the text is ``"visual"``, or the
category's prompt with ``keep_text``. Categories absent from an image are not asked (there is no box).
Two COCO AP figures come out:

- **kept**: against all the category's objects, the exemplar's own object included (finding the box you
  were given counts);
- **others**: the exemplar's object removed from the ground truth, and every detection of that query
  whose box has IoU >= ``exclude_iou`` with the exemplar box removed from the predictions, so the figure
  says whether the model finds the *other* objects like it (a query whose only object was the exemplar
  then has no ground truth: its remaining detections are false positives).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from sam3tune.data import QueryDataset, QueryPlan, Sample
from sam3tune.data.exemplars import VISUAL_PROMPT
from sam3tune.data.transforms import transform_boxes
from sam3tune.eval.coco_metrics import CocoMetrics, coco_metrics
from sam3tune.eval.nms import box_iou_xyxy


@dataclass(frozen=True)
class ExemplarPrompt:
    """The exemplar of one (image, category) query: the chosen object and its xyxy pixel box."""

    image_id: int
    category_id: int
    annotation_id: int
    box: tuple[float, float, float, float]


@dataclass
class ExemplarMetrics:
    """COCO AP of the exemplar protocol per IoU type: ``kept`` (exemplar object counted) and ``others``
    (exemplar object and its detections excluded); ``queries`` asked, ``excluded`` detections removed."""

    kept: dict[str, CocoMetrics]
    others: dict[str, CocoMetrics]
    queries: int
    excluded: int
    seed: int
    keep_text: bool


def choose_exemplars(plan: QueryPlan, seed: int = 0) -> list[ExemplarPrompt]:
    """One exemplar per (image, positive category) of an evaluation plan, in plan order."""
    prompts = []
    for query in plan.images:
        image_id = query.image.image_id
        for category_id, objects in query.positives.items():
            rng = np.random.default_rng([seed, image_id, category_id])
            chosen = objects[int(rng.integers(len(objects)))]
            prompts.append(ExemplarPrompt(image_id, category_id, chosen.annotation_id, tuple(chosen.box)))
    return prompts


class ExemplarQueries(Dataset):
    """The images of an evaluation dataset that have a positive category, each asked every such
    category with its exemplar box (eval transforms of ``dataset``)."""

    def __init__(self, dataset: QueryDataset, prompts: Sequence[ExemplarPrompt], keep_text: bool = False):
        self.dataset = dataset
        self.keep_text = keep_text
        self.by_image: dict[int, dict[int, ExemplarPrompt]] = {}
        for prompt in prompts:
            self.by_image.setdefault(prompt.image_id, {})[prompt.category_id] = prompt
        self.indices = [i for i, q in enumerate(dataset.plan.images) if self.by_image.get(q.image.image_id)]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Sample:
        dataset_index = self.indices[index]
        sample = self.dataset[dataset_index]
        image = self.dataset.plan.images[dataset_index].image
        chosen = self.by_image[image.image_id]
        geometry = self.dataset.geometry(dataset_index)
        rows = [i for i, c in enumerate(sample.category_ids) if c in chosen]
        categories = [sample.category_ids[i] for i in rows]
        boxes = transform_boxes(
            np.array([chosen[c].box for c in categories]), image.width, image.height, geometry
        )
        return Sample(
            image=sample.image,
            image_id=sample.image_id,
            orig_size=sample.orig_size,
            category_ids=categories,
            prompts=[sample.prompts[i] if self.keep_text else VISUAL_PROMPT for i in rows],
            targets=[sample.targets[i] for i in rows],
            dropped=sample.dropped,
            exemplar_boxes=[boxes[k : k + 1] for k in range(len(rows))],
            exemplar_labels=[torch.ones(1, dtype=torch.int64) for _ in rows],
        )


def without_exemplars(
    gt: dict, results: Sequence[dict], prompts: Sequence[ExemplarPrompt], exclude_iou: float
) -> tuple[dict, list[dict], int]:
    """``gt`` without the exemplars' objects, ``results`` without the detections of each exemplar query
    whose box has IoU >= ``exclude_iou`` with its exemplar box, and how many detections were removed."""
    chosen = {(p.image_id, p.category_id): p for p in prompts}
    exemplar_ids = {p.annotation_id for p in prompts}
    others_gt = copy.deepcopy(gt)
    others_gt["annotations"] = [a for a in gt["annotations"] if a["id"] not in exemplar_ids]
    kept = []
    for entry in results:
        prompt = chosen.get((entry["image_id"], entry["category_id"]))
        if prompt is not None:
            x, y, w, h = entry["bbox"]
            detection = torch.tensor([[x, y, x + w, y + h]], dtype=torch.float64)
            iou = box_iou_xyxy(detection, torch.tensor([prompt.box], dtype=torch.float64))
            if float(iou) >= exclude_iou:
                continue
        kept.append(entry)
    return others_gt, kept, len(results) - len(kept)


def exemplar_metrics(
    gt: dict,
    results: Sequence[dict],
    prompts: Sequence[ExemplarPrompt],
    iou_types: Sequence[str],
    exclude_iou: float = 0.5,
    seed: int = 0,
    keep_text: bool = False,
) -> ExemplarMetrics:
    """Both AP figures of the protocol for the COCO ``results`` of the exemplar queries ``prompts``."""
    others_gt, others_results, excluded = without_exemplars(gt, results, prompts, exclude_iou)
    return ExemplarMetrics(
        kept={t: coco_metrics(gt, results, t) for t in iou_types},
        others={t: coco_metrics(others_gt, others_results, t) for t in iou_types},
        queries=len(prompts),
        excluded=excluded,
        seed=seed,
        keep_text=keep_text,
    )
