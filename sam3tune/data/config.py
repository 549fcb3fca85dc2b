"""``DataConfig``: where the data is and how it becomes queries; defaults are the official recipe.

Official recipe = Meta's ``sam3/train/configs/roboflow_v100/roboflow_v100_full_ft_100_images.yaml``
(and ``roboflow_seg_example.yaml`` for masks): resolution 1008, square random resize to a side in
{480, 512, ..., 992} then random-offset pad to 1008, mean = std = 0.5, all negatives
(``COCO_FROM_JSON(include_negatives=True)``), at most 200 objects per query
(``max_ann_per_img: 200``), crowd objects filtered, and **no horizontal flip** (neither recipe
has a flip transform), so ``hflip`` defaults to off.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from sam3tune.config import require, require_range


@dataclass
class ExemplarConfig:
    """Exemplar queries in training (``data.exemplars``); off by default (the official recipes never use
    them)."""

    probability: float = 0.0
    """Chance that a positive query becomes an exemplar query (Meta's ``TextQueryToVisual``)."""
    max_positives: int = 1
    """k: the number of positive exemplars is drawn uniformly from 1..min(k, targets)."""
    keep_text: bool = False
    """Keep the category text next to the boxes; False replaces it with ``"visual"`` (official default)."""
    max_negatives: int = 0
    """Negative exemplars: uniformly 0..min(this, other categories' objects on the image)."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        require_range(self, "probability", low=0, high=1)
        require_range(self, "max_positives", low=1)
        require_range(self, "max_negatives", low=0)

    @property
    def enabled(self) -> bool:
        return self.probability > 0


@dataclass
class TilingConfig:
    """Large images as tiles (``data.tiling``; ``sam3tune.data.tiling``); off unless ``size`` is set."""

    size: int | None = None
    """Tile side in source pixels (None = off). Images no larger than this stay whole; each tile is then
    resized to the model input like any image."""
    overlap: float = 0.2
    """Share of a tile's side that neighbouring tiles share, in [0, 1)."""
    min_visible: float = 0.5
    """An object with less than this share of its area (mask pixels, else box) inside a tile is no
    target there; its category is then neither positive nor negative on that tile."""
    empty_tiles: float = 0.1
    """Share of the tiles without any object that are kept, as negative-only samples (chosen once,
    seeded)."""
    train: bool = True
    """Cut the training split into tiles."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        require_range(self, "size", low=1)
        require_range(self, "overlap", low=0, high=1, high_open=True)
        require_range(self, "min_visible", "empty_tiles", low=0, high=1)

    @property
    def enabled(self) -> bool:
        return self.size is not None


@dataclass
class DataConfig:
    """Dataset location and query / transform settings (embedded by the train config as ``data``)."""

    root: Path | None = None
    """Dataset root: a Roboflow export (``train/``, ``valid/`` or ``val/``, ``test/`` each with
    ``_annotations.coco.json``), a single split folder, a COCO JSON file, a YOLO dataset root
    (``data.yaml``, or ``images/`` + ``labels/``), or a Hugging Face dataset (``hf:ORG/NAME``, a
    ``save_to_disk`` folder, a folder of parquet files)."""
    train: str = "train"
    """Training split: a folder name under ``root`` or a COCO JSON path (relative to ``root``)."""
    val: str = "valid"
    """Evaluation split, as ``train`` (``valid`` and ``val`` are accepted for each other)."""
    train_images: Path | None = None
    """Image folder of ``train`` when it is a JSON file whose images are not beside it."""
    val_images: Path | None = None
    """Image folder of ``val`` when it is a JSON file whose images are not beside it."""
    resolution: int = 1008
    """Side S of the square model input."""
    mask_resolution: int | None = None
    """Side of the target masks; None = ``resolution`` (official). Smaller saves memory."""
    masks: bool = True
    """Load mask targets when the split has segmentations (False: box supervision only)."""
    hflip: bool = False
    """Random horizontal flip in training (off in the official roboflow recipes)."""
    negatives: Literal["all", "none"] | int = "all"
    """Queries for categories absent from an image: all of them, none, or k sampled per image."""
    max_objects_per_query: int = 200
    """Cap on targets per query; beyond it the largest boxes are kept and the rest counted."""
    prompts: Path | None = None
    """YAML or JSON map (category name or id -> prompt text) overriding the cleaned names."""
    keep_unused_categories: bool = False
    """Also query categories with no instance in the split (and Roboflow's placeholder)."""
    exemplars: ExemplarConfig = field(default_factory=ExemplarConfig)
    """Exemplar (box-prompt) queries in training; off by default (``sam3tune.data.exemplars``)."""
    tiling: TilingConfig = field(default_factory=TilingConfig)
    """Large images as tiles in training (off by default; ``docs/data.md``, "Large images")."""
    follow_symlinks: bool = False
    """Use image files that resolve (through symlinks) outside their image folder; off: skipped, counted."""
    hf_bbox_format: Literal["xywh", "xyxy"] = "xywh"
    """Box format of a Hugging Face dataset's ``objects.bbox`` (pixels): COCO ``[x, y, width, height]`` or
    ``[x0, y0, x1, y1]`` (``sam3tune.data.hf_datasets``)."""
    shots: int | None = None
    """Train on a K-shot sample of the training split (``sam3tune.data.shots``); None: the whole split."""
    shots_seed: int = 0
    """Seed of the K-shot sample: the same seed gives the same images."""
    shots_rule: Literal["image", "instance"] = "image"
    """What a shot is: an image showing the category, all its annotations kept (GLIP / ODinW), or one
    object, the image keeping only the sampled categories' objects (TFA / RF100-VL-FSOD)."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        require_range(self, "resolution", low=8)
        require_range(self, "mask_resolution", "max_objects_per_query", "shots", low=1)
        require_range(self, "shots_seed", low=0)
        require(
            not isinstance(self.negatives, int)
            or (not isinstance(self.negatives, bool) and self.negatives >= 0),
            "negatives",
            self.negatives,
            "must be 'all', 'none' or a number k >= 0",
        )
        for name in ("train", "val"):
            require(bool(getattr(self, name).strip()), name, getattr(self, name), "must name a split")

    @property
    def target_mask_resolution(self) -> int:
        """Side of the target masks actually produced."""
        return self.mask_resolution or self.resolution
