"""The data part of the diagnosis: the inspector's counts and problems plus the distributions that matter
for the loss (objects per query, object sizes against the ViT patch, masks) and the annotation mistakes
that pass validation silently (bbox already normalised, bbox written as corners)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from sam3tune.data import QueryPlan, train_sides
from sam3tune.doctor.flags import Flag, make_flag

OBJECTS_PER_QUERY_BINS = (1, 2, 4, 11, 31, 101)
"""Lower edges of the objects-per-positive-query bins: 1, 2-3, 4-10, 11-30, 31-100, >100."""
SIDE_BINS_IN_PATCHES = (0.0, 1.0, 2.0, 4.0, 8.0)
"""Lower edges of the object-side bins, in ViT patches at the evaluation resize."""
NORMALISED_BOX_SHARE = 0.5
"""Share of objects lying within the top-left 2 x 2 pixels above which bbox values look normalised."""
CLIPPED_BOX_SHARE = 0.2
"""Share of objects clipped to their image above which bbox looks like [x0, y0, x1, y1]."""
TINY_OBJECT_SHARE = 0.25
"""Share of sub-patch objects above which ``many_tiny_objects`` is raised."""
SUSPECT_LABEL_KINDS = (
    "annotation_duplicate",
    "iscrowd_invalid",
    "segmentation_out_of_range",
    "polygon_clipped",
    "mask_empty",
    "mask_box_mismatch",
    "image_outside_folder",
    "image_duplicate_file",
    "image_corrupt",
    "image_orientation_ambiguous",
    "prompt_truncated",
)
"""Problem kinds of the data loader (``sam3tune.data.CATALOGUE``) that point at mistaken labels rather
than at ordinary gaps: each found raises ``suspect_labels``."""


@dataclass(frozen=True)
class Distribution:
    """Summary of a sample: count, min / median / 90th percentile / max, and counts per bin (label, n)."""

    count: int
    minimum: float
    median: float
    p90: float
    maximum: float
    bins: tuple[tuple[str, int], ...]


def _bin_labels(lower_edges: tuple[float, ...], integers: bool) -> list[str]:
    labels = []
    for low, high in zip(lower_edges, (*lower_edges[1:], None), strict=True):
        if high is None:
            labels.append(f">={low:g}")
        elif integers:
            labels.append(f"{low:g}" if high - low == 1 else f"{low:g}-{high - 1:g}")
        else:
            labels.append(f"{low:g}-{high:g}")
    return labels


def distribution(
    values: list[float] | np.ndarray, lower_edges: tuple[float, ...], integers: bool = False
) -> Distribution:
    """Summarise ``values``; bin ``i`` holds values in ``[lower_edges[i], lower_edges[i + 1])`` (labels
    ``"4-10"`` for integer counts, ``"2-4"`` for continuous values, ``">=101"`` for the last bin)."""
    values = np.asarray(values, dtype=np.float64)
    labels = _bin_labels(lower_edges, integers)
    index = np.searchsorted(np.asarray(lower_edges), values, side="right") - 1
    counts = [int((index == i).sum()) for i in range(len(lower_edges))]
    if values.size == 0:
        return Distribution(0, 0.0, 0.0, 0.0, 0.0, tuple(zip(labels, counts, strict=True)))
    return Distribution(
        count=int(values.size),
        minimum=float(values.min()),
        median=float(np.median(values)),
        p90=float(np.percentile(values, 90)),
        maximum=float(values.max()),
        bins=tuple(zip(labels, counts, strict=True)),
    )


@dataclass(frozen=True)
class DataReport:
    """What the training split holds, as the loss will see it.

    ``inspection`` is the split's entry of the ``sam3tune data inspect`` report (``docs/data.md``, schema
    v1: counts, categories, problems). ``object_sides`` are in ViT patches at the evaluation resize
    (``sqrt(w h / (W H)) * resolution / patch``); ``tiny_objects`` are smaller than one patch even at the
    smallest training side. ``with_mask`` / ``box_only`` count target objects with and without a mask.
    """

    split: str
    annotation_file: str
    inspection: dict[str, Any]
    resolution: int
    patch_size: int
    images: int
    positive_queries: int
    negative_queries: int
    targets: int
    objects_per_query: Distribution
    object_sides: Distribution
    tiny_objects: int
    tiny_side_pixels: float
    with_mask: int
    box_only: int
    near_origin_boxes: int
    clipped_boxes: int

    @property
    def negative_share(self) -> float:
        return self.negative_queries / max(self.positive_queries + self.negative_queries, 1)

    @property
    def mask_coverage(self) -> float:
        return self.with_mask / max(self.with_mask + self.box_only, 1)

    @property
    def problems(self) -> list[dict[str, Any]]:
        return self.inspection.get("problems") or []


def data_report(
    split: str, plan: QueryPlan, inspection: dict[str, Any], resolution: int, patch_size: int
) -> DataReport:
    """Build the report of ``plan`` (the queries of training split ``split``; ``inspection`` its inspect
    entry) for a model taking ``resolution``-px images cut in ``patch_size``-px patches."""
    per_query, sides, near_origin = [], [], 0
    with_mask = box_only = 0
    for image_queries in plan.images:
        image = image_queries.image
        for objects in image_queries.positives.values():
            per_query.append(len(objects))
            for obj in objects:
                x0, y0, x1, y1 = obj.box
                sides.append(np.sqrt(max(x1 - x0, 0.0) * max(y1 - y0, 0.0) / (image.width * image.height)))
                near_origin += x1 <= 2.0 and y1 <= 2.0
                with_mask += obj.segmentation is not None
                box_only += obj.segmentation is None
    grid = resolution / patch_size
    sides_in_patches = np.asarray(sides) * grid
    smallest_side = min(train_sides(resolution))
    # An object of relative side r covers r * smallest_side pixels at the smallest training scale.
    tiny_in_patches = resolution / smallest_side
    return DataReport(
        split=split,
        annotation_file=str(inspection.get("annotation_file")),
        inspection=inspection,
        resolution=resolution,
        patch_size=patch_size,
        images=len(plan.images),
        positive_queries=plan.num_positive,
        negative_queries=plan.num_negative,
        targets=plan.num_targets,
        objects_per_query=distribution(per_query, OBJECTS_PER_QUERY_BINS, integers=True),
        object_sides=distribution(sides_in_patches, SIDE_BINS_IN_PATCHES),
        tiny_objects=int((sides_in_patches < tiny_in_patches).sum()),
        tiny_side_pixels=tiny_in_patches * patch_size,
        with_mask=with_mask,
        box_only=box_only,
        near_origin_boxes=near_origin,
        clipped_boxes=plan.problems["box_outside_image"],
    )


def data_flags(report: DataReport) -> list[Flag]:
    """Annotation mistakes the loader cannot refuse on its own, labels it doubted, and many sub-patch
    objects."""
    flags = []
    suspect = [p for p in report.problems if p["kind"] in SUSPECT_LABEL_KINDS]
    if suspect:
        flags.append(
            make_flag(
                "suspect_labels",
                f"{report.annotation_file}: " + ", ".join(f"{p['count']} x {p['kind']}" for p in suspect),
                details=[f"{p['kind']}: {example}" for p in suspect for example in p["examples"][:2]],
            )
        )
    targets = max(report.targets, 1)
    if report.near_origin_boxes / targets >= NORMALISED_BOX_SHARE:
        flags.append(
            make_flag(
                "annotation_boxes_normalised",
                f"{report.near_origin_boxes} of {report.targets} objects of {report.annotation_file} lie "
                "within the top-left 2 x 2 pixels of their image (bbox values <= 1?)",
            )
        )
    if report.clipped_boxes / targets >= CLIPPED_BOX_SHARE:
        flags.append(
            make_flag(
                "annotation_boxes_clipped",
                f"{report.clipped_boxes} of {report.targets} boxes of {report.annotation_file} had to be "
                "clipped to their image",
            )
        )
    if report.tiny_objects / targets >= TINY_OBJECT_SHARE:
        flags.append(
            make_flag(
                "many_tiny_objects",
                f"{report.tiny_objects} of {report.targets} objects ({report.tiny_objects / targets:.0%}) "
                f"have a side below {report.tiny_side_pixels:.0f} px of the {report.resolution}-px input "
                f"(one {report.patch_size}-px patch at the smallest training scale)",
            )
        )
    return flags
