"""Flags: what the doctor found wrong, as data (code, severity, one-line message, one-line fix).

Every code is in :data:`CATALOGUE` with what it means; ``docs/doctor.md`` lists the same catalogue. A flag
of severity ``error`` makes ``sam3tune doctor`` exit with status 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Severity = Literal["error", "warning", "info"]
SEVERITIES: tuple[Severity, ...] = ("error", "warning", "info")


@dataclass(frozen=True)
class FlagKind:
    """A kind of problem: its usual severity, what it means and the usual fix (one line each)."""

    severity: Severity
    meaning: str
    fix: str


CATALOGUE: dict[str, FlagKind] = {
    "data_unusable": FlagKind(
        "error",
        "the training split cannot be loaded, so training would stop at once",
        "fix the file named in the message; `sam3tune data inspect PATH` lists every problem",
    ),
    "dataset_without_targets": FlagKind(
        "error",
        "no query of the dataset has a target object: training would only ever see negatives",
        "check the annotation file (categories, bbox, iscrowd) with `sam3tune data inspect PATH`",
    ),
    "batch_without_targets": FlagKind(
        "error",
        "no query of the batch has a target object: box, mask and classification terms are all 0",
        "build targets from the annotations (one dict per query with boxes (n, 4)); check custom datasets",
    ),
    "annotation_boxes_normalised": FlagKind(
        "error",
        "COCO bbox values are already in [0, 1], so every object becomes a sub-pixel box",
        "write COCO bbox as [x, y, width, height] in pixels of the image (multiply by width / height)",
    ),
    "suspect_labels": FlagKind(
        "warning",
        "annotations, images or prompts look mistaken (duplicates, contradictions, masks off their boxes, "
        "corrupt or ambiguous images, cut prompts): the loader left them out or used them as read",
        "fix the annotation file at the examples shown; `sam3tune data inspect PATH` lists every problem",
    ),
    "annotation_boxes_clipped": FlagKind(
        "warning",
        "many COCO boxes reach outside their image: bbox is probably [x0, y0, x1, y1], not [x, y, w, h]",
        "convert bbox to [x, y, width, height] (width = x1 - x0, height = y1 - y0)",
    ),
    "boxes_not_normalised": FlagKind(
        "error",
        "target boxes are outside [0, 1] (pixel units?): the criterion refuses them",
        "give boxes as cxcywh divided by the image canvas side (cx, w by width; cy, h by height)",
    ),
    "boxes_outside_image": FlagKind(
        "warning",
        "target boxes read as cxcywh reach outside the image: they are probably xyxy or COCO xywh",
        "convert boxes to (cx, cy, w, h): cx = x0 + w / 2, cy = y0 + h / 2",
    ),
    "boxes_masks_disagree": FlagKind(
        "warning",
        "target boxes do not cover their own masks: boxes and masks come from different geometry",
        "make boxes and masks from the same transform (or boxes are in the wrong format)",
    ),
    "loss_failed": FlagKind(
        "error",
        "the criterion refused the batch, so training would fail on its first step",
        "see the message: it names the target or output that is malformed",
    ),
    "loss_not_finite": FlagKind(
        "error",
        "the loss of the first batch is NaN or inf",
        "check inputs for NaN (images, boxes) and the model weights; lower the learning rate",
    ),
    "term_dominates": FlagKind(
        "warning",
        "one loss term is more than 90% of the total: the others barely train",
        "check that term's weight (loss.weights.*) and its inputs (boxes, masks) against the recipe",
    ),
    "total_out_of_range": FlagKind(
        "error",
        "the first-batch loss is far from what the recipe gives an uninformed model on this batch",
        "use the recipe's loss weights and normalisation (loss.*); check box units and mask targets",
    ),
    "weights_differ_from_recipe": FlagKind(
        "warning",
        "loss settings differ from Meta's official fine-tuning recipe",
        "remove the loss.* overrides listed unless they are intended",
    ),
    "model_build_failed": FlagKind(
        "error",
        "the model cannot be built from the configuration",
        "see the message (model.* settings)",
    ),
    "lora_component_without_adapters": FlagKind(
        "error",
        "a component listed for LoRA has no layer matching its target pattern, so it would not train",
        "fix model.finetune.lora.target_modules for it, or drop it from model.finetune.lora.components",
    ),
    "all_parameters_frozen": FlagKind(
        "error",
        "no parameter is trainable: the optimiser would have nothing to update",
        "unfreeze components (model.finetune.freeze) or use model.finetune.mode=lora",
    ),
    "trainable_without_gradient": FlagKind(
        "warning",
        "trainable parameters got no gradient from the batch (they would not learn from it)",
        "freeze them, or give the loss what they need (e.g. mask targets for mask_decoder)",
    ),
    "learning_rate_far_from_recipe": FlagKind(
        "warning",
        "learning rates differ from the recipe by 3x or more (10x or more: error)",
        "use the recipe's optim.lr_* (8e-5 transformer, 2.5e-5 vision, 5e-6 text) unless intended",
    ),
    "optimiser_differs_from_recipe": FlagKind(
        "info",
        "weight decay, gradient clipping, betas or eps differ from the recipe",
        "remove the optim.* overrides listed unless they are intended",
    ),
    "queries_over_budget": FlagKind(
        "warning",
        "a training step would ask more queries than the device's memory holds by the memory estimate "
        "(every absent category is a negative query): training caps data.negatives, or refuses",
        "set data.negatives=K (the message gives the K that fit), train on fewer categories, a smaller "
        "loop.batch_size or a device with more memory",
    ),
    "no_negatives": FlagKind(
        "warning",
        "no query is a negative (a prompt absent from its image) and no retention prompt is named: nothing "
        'teaches "not here", so the tuned prompts learn to fire on anything and other concepts drift',
        "keep data.negatives=all (the recipe), add images without the objects or more categories, and name "
        'the concepts to keep in retention.prompts (docs/train.md, "Fine-tune without forgetting")',
    ),
    "many_tiny_objects": FlagKind(
        "info",
        "many objects are smaller than one ViT patch at the smallest training scale",
        "use a higher data.resolution only if the model supports it, or tile large images",
    ),
}


@dataclass(frozen=True)
class Flag:
    """One finding: ``code`` (a key of :data:`CATALOGUE`), ``severity``, a specific one-line ``message``
    (with the numbers), a one-line ``fix`` and optional ``details`` (e.g. each differing setting)."""

    code: str
    severity: Severity
    message: str
    fix: str
    details: tuple[str, ...] = field(default_factory=tuple)

    @property
    def meaning(self) -> str:
        return CATALOGUE[self.code].meaning


def make_flag(
    code: str,
    message: str,
    *,
    severity: Severity | None = None,
    fix: str | None = None,
    details: tuple[str, ...] | list[str] = (),
) -> Flag:
    """A flag of catalogue kind ``code``; severity and fix default to the catalogue's."""
    kind = CATALOGUE[code]
    return Flag(code, severity or kind.severity, message, fix or kind.fix, tuple(details))
