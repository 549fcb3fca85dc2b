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

from sam3tune.errors import UserError

log = logging.getLogger(__name__)

Severity = Literal["error", "skipped", "fixed", "warning", "info"]
"""``skipped``: the item is left out; ``fixed``: changed so it can be used; ``warning``: used as read, but
possibly wrong (look at the examples); ``info``: worth knowing."""

# kind -> (severity, what happened). Fatal kinds are raised as DataError with a specific message;
# they are listed here so that the documentation and ``inspect`` name them consistently.
CATALOGUE: dict[str, tuple[Severity, str]] = {
    "invalid_json": (
        "error",
        "the annotation file is not valid JSON (or is truncated), or repeats a key in one object",
    ),
    "missing_key": ("error", "a required COCO key is missing or has the wrong type"),
    "duplicate_image_id": ("error", "two image entries share an id"),
    "duplicate_annotation_id": ("error", "two annotations share an id"),
    "duplicate_category_id": ("error", "two categories share an id"),
    "id_out_of_range": ("error", "an image, category or annotation id does not fit a 64-bit integer"),
    "path_escapes_root": ("error", "an image file_name is absolute or leaves the image folder"),
    "mixed_labels": ("error", "semantic label maps and instance labels in one dataset"),
    "layout_invalid": (
        "error",
        "no annotation file, data.yaml or labels folder where one belongs; data.yaml, classes.txt or "
        "semantic.yaml unreadable or without names",
    ),
    "dataset_missing": ("error", "data.root is not set, or no file or folder is there"),
    "split_missing": ("error", "the dataset has no split of that name (data.train / data.val)"),
    "empty_split": ("error", "the split has no images or no annotations"),
    "option_not_applicable": (
        "error",
        "a data option the dataset kind does not use (exemplars or a prompt map on label maps, image folders "
        "of COCO JSON files on YOLO, ...): refused instead of ignored",
    ),
    "hf_schema": (
        "error",
        "a Hugging Face dataset whose features do not fit the detection schema (image, objects.bbox, "
        "objects.category with names); the field is named",
    ),
    "hf_unavailable": (
        "error",
        "a Hugging Face dataset that cannot be read: `datasets` not installed, no such dataset, gated, or "
        "the Hub unreachable and nothing cached",
    ),
    "no_valid_annotations": ("error", "every annotation of the split is invalid"),
    "no_usable_images": ("error", "no image of the split can be used"),
    "no_usable_queries": ("error", "the split yields no query with a target"),
    "prompt_collision": (
        "error",
        "two queried categories give the same prompt (after cleaning, or after tokenizing): the same "
        "prompt would be positive and negative on one image",
    ),
    "annotation_missing_image": ("skipped", "annotation skipped: its image_id is not among the images"),
    "annotation_missing_category": ("skipped", "annotation skipped: its category_id is not a category"),
    "label_line_malformed": ("skipped", "YOLO label line skipped: not a class id followed by numbers"),
    "label_without_image": ("skipped", "YOLO label file skipped: no image with its name"),
    "label_file_unreadable": ("skipped", "image skipped: its YOLO label file cannot be read"),
    "label_file_missing": ("info", "image without a YOLO label file: no objects, a negative for every class"),
    "text_byte_order_mark": ("fixed", "UTF-8 byte-order mark at the start of a text file removed"),
    "yaml_path_ignored": (
        "warning",
        "data.yaml 'path' is not a folder inside the dataset root: splits read relative to the root",
    ),
    "image_label_ambiguous": ("skipped", "image skipped: another image has the same YOLO label file"),
    "label_map_missing": ("skipped", "image skipped: its semantic label map is missing"),
    "label_value_unknown": ("info", "label map indices that are no class (and not ignored): no class there"),
    "label_map_all_ignored": (
        "skipped",
        "image skipped: every pixel of its label map is the ignore index (it teaches 'every class absent')",
    ),
    "annotation_malformed": ("skipped", "annotation skipped: missing/non-numeric bbox or ids"),
    "annotation_duplicate": (
        "skipped",
        "annotation skipped: exact duplicate of another (image, category, box, mask)",
    ),
    "iscrowd_invalid": (
        "skipped",
        "annotation ignored (not a target, its category not a negative on the image): iscrowd is not 0 or 1",
    ),
    "box_nonpositive": ("skipped", "annotation skipped: box width or height is zero or negative"),
    "box_outside_image": ("fixed", "box clipped to the image"),
    "box_entirely_outside": ("skipped", "annotation skipped: box lies entirely outside the image"),
    "polygon_invalid": ("skipped", "polygon ignored: fewer than 3 points or an odd coordinate count"),
    "rle_size_mismatch": ("skipped", "mask ignored (box kept): RLE size differs from the image size"),
    "segmentation_malformed": ("skipped", "mask ignored (box kept): segmentation is not a polygon or RLE"),
    "segmentation_out_of_range": (
        "skipped",
        "mask ignored (box kept): polygon far outside the image (wrong units?) or outline too long",
    ),
    "polygon_clipped": ("fixed", "polygon reaching more than one image side outside the image clipped there"),
    "mask_empty": ("skipped", "mask ignored (box kept): it covers no pixel of the image"),
    "mask_box_mismatch": ("skipped", "mask ignored (box kept): most of the mask lies outside its box"),
    "image_missing": ("skipped", "image skipped: file not found"),
    "image_outside_folder": (
        "skipped",
        "image skipped: its path resolves (through a symlink) outside the image folder",
    ),
    "image_duplicate_file": ("skipped", "image skipped: the same file is listed under several image ids"),
    "image_unreadable": ("skipped", "image skipped: file cannot be decoded"),
    "image_truncated": ("skipped", "image skipped: file is truncated"),
    "image_corrupt": ("skipped", "image skipped: corrupt JPEG data (it decodes, with damaged pixels)"),
    "image_size_mismatch": ("skipped", "image skipped: JSON width/height differ from the real size"),
    "image_converted": ("fixed", "image converted to RGB (grayscale, alpha, palette or 16-bit)"),
    "image_orientation_ambiguous": (
        "warning",
        "EXIF rotation/flip the JSON size cannot confirm: annotations taken in the displayed frame",
    ),
    "image_large": ("info", "image above 20 megapixels: decoded at reduced size where the format allows"),
    "tile_object_dropped": (
        "info",
        "object cut by a tile border with less than data.tiling.min_visible inside: no target on that tile "
        "(its category neither positive nor negative there)",
    ),
    "tile_object_lost": (
        "warning",
        "object that is a target on no tile (larger than a tile, or cut on every one): raise "
        "data.tiling.size or lower data.tiling.min_visible",
    ),
    "tile_empty_left_out": ("info", "tile without objects left out (data.tiling.empty_tiles keeps a share)"),
    "category_unused": ("skipped", "category skipped: no instance in this split"),
    "category_placeholder": ("skipped", "category skipped: Roboflow placeholder (id 0, no annotations)"),
    "objects_over_cap": ("skipped", "objects beyond the per-query cap (the largest are kept)"),
    "image_without_queries": ("info", "image left out: no positive and no negative query"),
    "prompt_truncated": ("warning", "prompt longer than the tokenizer's context: its end is cut off"),
}

MAX_EXAMPLES = 5


class DataError(UserError, ValueError):
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
