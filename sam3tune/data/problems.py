"""What can be wrong with a dataset: the catalogue of problem kinds, the per-split report, the error.

Every problem found while reading a split is either fatal (a :class:`DataError` naming the file
and the image / annotation id) or a counted entry of a :class:`ProblemReport`: the item is skipped
(image, annotation, mask ignored) or fixed (box clipped, image converted to RGB), and the report
keeps the count plus the first few culprits so ``sam3tune data inspect`` can show them.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

log = logging.getLogger(__name__)

Severity = Literal["error", "skipped", "fixed", "info"]

# kind -> (severity, what happened). Fatal kinds are raised as DataError with a specific message;
# they are listed here so that the documentation and ``inspect`` name them consistently.
CATALOGUE: dict[str, tuple[Severity, str]] = {
    "invalid_json": ("error", "the annotation file is not valid JSON (or is truncated)"),
    "missing_key": ("error", "a required COCO key is missing or has the wrong type"),
    "duplicate_image_id": ("error", "two image entries share an id"),
    "duplicate_annotation_id": ("error", "two annotations share an id"),
    "duplicate_category_id": ("error", "two categories share an id"),
    "path_escapes_root": ("error", "an image file_name is absolute or leaves the image folder"),
    "mixed_labels": ("error", "semantic label maps and instance labels in one dataset"),
    "layout_invalid": (
        "error",
        "data.yaml, classes.txt or semantic.yaml unreadable or without names, or a split folder absent",
    ),
    "empty_split": ("error", "the split has no images or no annotations"),
    "no_valid_annotations": ("error", "every annotation of the split is invalid"),
    "no_usable_images": ("error", "no image of the split can be used"),
    "no_usable_queries": ("error", "the split yields no query with a target"),
    "annotation_missing_image": ("skipped", "annotation skipped: its image_id is not among the images"),
    "annotation_missing_category": ("skipped", "annotation skipped: its category_id is not a category"),
    "label_line_malformed": ("skipped", "YOLO label line skipped: not a class id followed by numbers"),
    "label_without_image": ("skipped", "YOLO label file skipped: no image with its name"),
    "label_file_unreadable": ("skipped", "image skipped: its YOLO label file cannot be read"),
    "image_label_ambiguous": ("skipped", "image skipped: another image has the same YOLO label file"),
    "label_map_missing": ("skipped", "image skipped: its semantic label map is missing"),
    "label_value_unknown": ("info", "label map indices that are no class (and not ignored): no class there"),
    "annotation_malformed": ("skipped", "annotation skipped: missing/non-numeric bbox or ids"),
    "box_nonpositive": ("skipped", "annotation skipped: box width or height is zero or negative"),
    "box_outside_image": ("fixed", "box clipped to the image"),
    "box_entirely_outside": ("skipped", "annotation skipped: box lies entirely outside the image"),
    "polygon_invalid": ("skipped", "polygon ignored: fewer than 3 points or an odd coordinate count"),
    "rle_size_mismatch": ("skipped", "mask ignored (box kept): RLE size differs from the image size"),
    "segmentation_malformed": ("skipped", "mask ignored (box kept): segmentation is not a polygon or RLE"),
    "image_missing": ("skipped", "image skipped: file not found"),
    "image_unreadable": ("skipped", "image skipped: file cannot be decoded"),
    "image_truncated": ("skipped", "image skipped: file is truncated"),
    "image_size_mismatch": ("skipped", "image skipped: JSON width/height differ from the real size"),
    "image_converted": ("fixed", "image converted to RGB (grayscale, alpha, palette or 16-bit)"),
    "category_unused": ("skipped", "category skipped: no instance in this split"),
    "category_placeholder": ("skipped", "category skipped: Roboflow placeholder (id 0, no annotations)"),
    "objects_over_cap": ("skipped", "objects beyond the per-query cap (the largest are kept)"),
    "image_without_queries": ("info", "image left out: no positive and no negative query"),
}

MAX_EXAMPLES = 5


class DataError(ValueError):
    """A dataset problem that makes the split unusable; the message names the file and the id."""

    def __init__(self, kind: str, message: str):
        if kind not in CATALOGUE:
            raise KeyError(f"unknown problem kind {kind!r}")
        super().__init__(message)
        self.kind = kind


@dataclass
class ProblemReport:
    """Counts of non-fatal problems of one split, with up to ``MAX_EXAMPLES`` culprits each."""

    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, kind: str, culprit: str, count: int = 1) -> None:
        """Count ``count`` occurrences of ``kind``; ``culprit`` names the file / image / annotation."""
        severity, _ = CATALOGUE[kind]
        if severity == "error":
            raise ValueError(f"{kind} is fatal: raise DataError instead of counting it")
        self.counts[kind] += count
        shown = self.examples.setdefault(kind, [])
        if len(shown) < MAX_EXAMPLES:
            shown.append(culprit)

    def __getitem__(self, kind: str) -> int:
        return self.counts[kind]

    def as_list(self) -> list[dict]:
        """One entry per kind found, in catalogue order (the ``problems`` list of inspect's JSON)."""
        return [
            {
                "kind": kind,
                "severity": CATALOGUE[kind][0],
                "count": self.counts[kind],
                "message": CATALOGUE[kind][1],
                "examples": list(self.examples.get(kind, [])),
            }
            for kind in CATALOGUE
            if self.counts[kind]
        ]

    def log(self, where: str) -> None:
        """Log one warning line per kind (info kinds at INFO level)."""
        for entry in self.as_list():
            level = logging.INFO if entry["severity"] == "info" else logging.WARNING
            log.log(
                level,
                "%s: %d x %s (e.g. %s)",
                where,
                entry["count"],
                entry["message"],
                "; ".join(entry["examples"]),
            )
