"""Semantic segmentation with SAM 3's semantic head: label maps, per-class IoU and mIoU, reports.

Each (image, class) query gives a map ``score = sigmoid(semantic_seg) * sigmoid(presence)``: the semantic
loss leaves the maps of absent classes untrained (Meta's ``presence_head=True``), so the presence score
gates them. A pixel takes the class with the highest score when it is above ``threshold`` (0.5), else
no class. IoU of class ``c`` = ``sum over images |pred = c and gt = c| / |pred = c or gt = c|`` over the
pixels that are not ignored, at the data's target-mask resolution on the evaluation canvas (the image
resized to the square model input); mIoU = mean over the classes that occur in the ground truth or the
predictions of the split.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from sam3tune.data import Batch, DataConfig, collate
from sam3tune.data.semantic import SemanticDataset, build_semantic_dataset
from sam3tune.eval.inference import InferenceModel
from sam3tune.eval.postprocess import label_map, semantic_scores
from sam3tune.eval.report import REPORT_JSON, REPORT_MD
from sam3tune.model.hub import model_label
from sam3tune.output_files import write_text_atomic
from sam3tune.progress import progress_bar


@dataclass
class SemanticMetrics:
    """Pixel counts per class (label index -> name) and the IoUs made from them."""

    classes: dict[int, str]
    intersection: dict[int, int]
    union: dict[int, int]

    def iou(self, class_index: int) -> float | None:
        """IoU of one class; None when it is neither in the ground truth nor predicted."""
        union = self.union[class_index]
        return self.intersection[class_index] / union if union else None

    @property
    def miou(self) -> float:
        values = [v for c in self.classes if (v := self.iou(c)) is not None]
        return sum(values) / len(values) if values else float("nan")

    def summary(self) -> dict[str, float]:
        """``{"mIoU": ..., "IoU/<class name>": ...}`` (classes with an IoU only)."""
        out = {"mIoU": self.miou}
        out.update({f"IoU/{name}": v for c, name in self.classes.items() if (v := self.iou(c)) is not None})
        return out


@torch.no_grad()
def evaluate_semantic(
    forward: Callable[[Batch], dict],
    batches: Iterable[Batch],
    classes: dict[int, str],
    progress: bool = False,
) -> SemanticMetrics:
    """Run ``forward`` over ``batches`` of a :class:`SemanticDataset` (every class queried per image)."""
    intersection = dict.fromkeys(classes, 0)
    union = dict.fromkeys(classes, 0)
    for batch in progress_bar(batches, desc="semantic eval", disable=not progress, leave=False):
        outputs = forward(batch)
        masks = torch.stack([t["semantic_mask"] for t in batch.targets])
        scores = semantic_scores(outputs, tuple(masks.shape[-2:])).cpu()
        for row in range(batch.num_images):
            queries = (batch.image_index == row).nonzero().flatten()
            class_ids = batch.category_ids[queries]
            pred = label_map(scores[queries], class_ids)
            truth = torch.full_like(pred, -1)
            for q, c in zip(queries.tolist(), class_ids.tolist(), strict=True):
                truth[masks[q]] = c
            valid = batch.targets[int(queries[0])].get("semantic_valid")
            valid = torch.ones_like(pred, dtype=torch.bool) if valid is None else valid
            for c in class_ids.tolist():
                p, t = (pred == c) & valid, (truth == c) & valid
                intersection[c] += int((p & t).sum())
                union[c] += int((p | t).sum())
    return SemanticMetrics(dict(classes), intersection, union)


def semantic_loader(dataset: SemanticDataset, tokenize, batch_size: int = 8) -> DataLoader:
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=False, collate_fn=partial(collate, tokenize=tokenize)
    )


def make_semantic_validator(
    dataset: SemanticDataset, tokenize, device: torch.device | str = "cpu", batch_size: int = 8
) -> Callable[[nn.Module], dict[str, float]]:
    """``validate(module) -> {"mIoU": ..., "IoU/<class>": ...}`` for the train loop."""
    loader = semantic_loader(dataset, tokenize, batch_size)

    def validate(model: nn.Module) -> dict[str, float]:
        was_training = model.training
        model.eval()
        try:

            def forward(batch: Batch) -> dict:
                batch = batch.to(device)
                return model(batch.pixel_values, batch.image_index, batch.input_ids, batch.attention_mask)

            return evaluate_semantic(forward, loader, dataset.split.classes).summary()
        finally:
            model.train(was_training)

    return validate


def evaluate_semantic_model(
    model: str,
    data: DataConfig,
    out_dir: str | Path,
    baseline: str | None = None,
    device: str | None = None,
    batch_size: int = 8,
    progress: bool = True,
) -> tuple[SemanticMetrics, SemanticMetrics | None, str]:
    """mIoU of model spec ``model`` (and ``baseline``) on split ``data.val`` of a semantic dataset;
    writes ``eval.json`` and ``eval.md`` to ``out_dir``; returns both metrics and the Markdown."""
    def run(spec: str) -> SemanticMetrics:
        runner = InferenceModel.load(spec, device=device)
        config = dataclasses.replace(data, resolution=runner.image_size)
        dataset = build_semantic_dataset(config, data.val, train=False)
        loader = semantic_loader(dataset, runner.tokenize, batch_size)
        return evaluate_semantic(runner.forward, loader, dataset.split.classes, progress)

    base = run(baseline) if baseline is not None else None
    metrics = run(model)
    label, base_label = model_label(model), model_label(baseline) if baseline is not None else None
    markdown = semantic_markdown(metrics, label, base, base_label, f"{data.root} (split {data.val})")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    document = {"model": model, "metrics": metrics.summary(), "data": str(data.root), "split": data.val}
    if base is not None:
        document.update(baseline=baseline, baseline_metrics=base.summary())
    write_text_atomic(out_dir / REPORT_JSON, json.dumps(document, indent=2))
    write_text_atomic(out_dir / REPORT_MD, markdown + "\n")
    return metrics, base, markdown


def semantic_markdown(
    metrics: SemanticMetrics,
    label: str,
    baseline: SemanticMetrics | None = None,
    baseline_label: str | None = None,
    data: str = "",
) -> str:
    """A table of IoU per class and mIoU (percent), the baseline beside when given."""

    def cell(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.1f}"

    head = ["class", *([baseline_label or "baseline"] if baseline else []), label]
    lines = [f"# Semantic segmentation: {data}", "", "| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for c, name in metrics.classes.items():
        row = [name, *([cell(baseline.iou(c))] if baseline else []), cell(metrics.iou(c))]
        lines.append("| " + " | ".join(row) + " |")
    lines.append(
        "| **mIoU** | " + (f"{cell(baseline.miou)} | " if baseline else "") + f"**{cell(metrics.miou)}** |"
    )
    return "\n".join(lines)
