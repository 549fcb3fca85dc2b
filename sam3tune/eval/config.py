"""Evaluation and inference settings; the defaults follow SAM 3's official evaluation."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from sam3tune.config import require, require_device, require_range
from sam3tune.data.config import DataConfig
from sam3tune.video.config import VideoConfig


@dataclass
class SlicingConfig:
    """Sliced prediction of large images (``postprocess.tiling``; :mod:`sam3tune.eval.sliced`); off
    unless ``size`` is set."""

    size: int | None = None
    """Tile side in source pixels (None = off: the whole image is resized once)."""
    overlap: float = 0.2
    """Share of a tile's side that neighbouring tiles share, in [0, 1)."""
    full_image: bool = True
    """Also predict the whole image resized once and merge its detections with the tiles' (finds
    objects larger than a tile, as SAHI's standard prediction)."""
    merge_metric: Literal["ios", "iou"] = "ios"
    """Box overlap that merges detections: intersection over the smaller box, or IoU."""
    merge_threshold: float = 0.5
    """Detections of one prompt whose boxes overlap at least this much are merged into one."""
    merge_pool: int = 3000
    """At most this many highest-scoring detections per prompt and image enter the merge."""
    tiles_per_forward: int = 8
    """Tiles encoded in one forward pass (each with all prompts)."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        require_range(self, "size", "merge_pool", "tiles_per_forward", low=1)
        require_range(self, "overlap", low=0, high=1, high_open=True)
        require_range(self, "merge_threshold", low=0, high=1, low_open=True)
        require(self.merge_metric in ("ios", "iou"), "merge_metric", self.merge_metric, "must be ios or iou")

    @property
    def enabled(self) -> bool:
        return self.size is not None


@dataclass
class PostprocessConfig:
    """How raw model outputs become detections (see :mod:`sam3tune.eval.postprocess`).

    The defaults keep every query up to ``max_detections`` (what COCO AP wants: AP integrates over
    all scores); user-facing prediction raises ``score_threshold``.
    """

    score_threshold: float = 0.0  # keep detections with sigmoid(logit) * sigmoid(presence) >= this
    max_detections: int = 100  # per query, highest scores first (COCO's maxDets)
    nms_iou_threshold: float | None = None  # greedy box NMS within a query; None = off (official)
    mask_threshold: float = 0.5  # on sigmoid of the mask logits after upsampling to the image size
    with_masks: bool = True  # upsample, threshold and RLE-encode masks of kept detections
    tiling: SlicingConfig = field(default_factory=SlicingConfig)  # sliced prediction of large images

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        require_range(self, "score_threshold", "mask_threshold", low=0, high=1)
        require_range(self, "nms_iou_threshold", low=0, high=1, low_open=True)
        require_range(self, "max_detections", low=1)


@dataclass
class ExemplarProtocolConfig:
    """The exemplar protocol of ``sam3tune eval`` (:mod:`sam3tune.eval.exemplar_protocol`)."""

    enabled: bool = False  # also prompt each (image, category) with one of its own boxes
    seed: int = 0  # which object is the exemplar: seeded by (seed, image id, category id)
    keep_text: bool = False  # prompt text + box; False: the placeholder "visual" + box
    exclude_iou: float = 0.5  # "others" AP drops detections with box IoU >= this with the exemplar


#: Default cap on the queries of one inference forward pass (eval, validation, predict).
MAX_QUERIES_PER_FORWARD = 64


@dataclass
class RetentionConfig:
    """Retention of the concepts a run does not tune (:mod:`sam3tune.eval.retention`); off while
    ``prompts`` is empty and ``data`` unset."""

    prompts: list[str] | Path = field(default_factory=list)
    """Prompts the run does not tune (e.g. what the starting model already knows): a list, or a file with
    one prompt per line (or a YAML list)."""
    images: Path | None = None
    """An extra folder of unlabelled images to ask them on, besides the evaluation images."""
    data: Path | None = None
    """Labelled data for them (a dataset root, any format ``data.root`` takes): true AP before and after
    (its category prompts are the retention prompts when ``prompts`` is empty)."""
    split: str | None = None
    """The split of ``data``; None: the evaluation split (``data.val``)."""
    score_threshold: float = 0.5
    """The starting model's detections at or above this score are the reference."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        require_range(self, "score_threshold", low=0, high=1, low_open=True)
        require(self.split is None or bool(self.split.strip()), "split", self.split, "must name a split")

    @property
    def enabled(self) -> bool:
        return bool(self.prompts) or self.data is not None


@dataclass
class EvalConfig:
    """What ``sam3tune eval`` computes."""

    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)
    iou_types: list[str] = field(default_factory=lambda: ["bbox", "segm"])
    cgf1_score_threshold: float = 0.5  # detections count for cgF1 at score >= this (Meta's default)
    specificity_score_threshold: float = 0.5  # a negative prompt "fires" with a detection >= this
    batch_size: int = 1  # images per forward pass (each with all its category prompts)
    # at most this many queries (image x prompt) per forward pass: more (thousands of categories) are
    # split into several, each image encoded again per piece, so memory stays bounded on every device
    max_queries_per_forward: int = MAX_QUERIES_PER_FORWARD
    num_workers: int = 2  # DataLoader workers
    exemplars: ExemplarProtocolConfig = field(default_factory=ExemplarProtocolConfig)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        require_range(self, "cgf1_score_threshold", "specificity_score_threshold", low=0, high=1)
        require_range(self, "batch_size", "max_queries_per_forward", low=1)
        require_range(self, "num_workers", low=0)
        require(
            bool(self.iou_types) and set(self.iou_types) <= {"bbox", "segm"},
            "iou_types",
            self.iou_types,
            "must be a non-empty list of bbox and/or segm",
        )


@dataclass
class VideoEvalConfig(VideoConfig):
    """``sam3tune eval`` on video ground truth: the ``predict --video`` keys that run each model, plus
    ``frames`` (the folder the videos' ``file_names`` are relative to; default ``JPEGImages/`` beside the
    annotation file, else its folder) and ``hota_score_threshold`` (tracks scoring below it are left out
    of HOTA, which takes hard decisions). ``detections=true`` also scores the detector per frame."""

    frames: Path | None = None
    hota_score_threshold: float = 0.5
    overlay: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        require_range(self, "hota_score_threshold", low=0.0, high=1.0)


@dataclass
class EvalRunConfig(EvalConfig):
    """What ``sam3tune eval`` evaluates, and how (the :class:`EvalConfig` keys at top level).

    ``model`` / ``baseline``: model specs (a ``save_pretrained`` folder, a hub id or tiny/small); ``data``:
    the dataset, its split ``data.val`` and prompt map ``data.prompts`` (the resolution follows the
    model); ``device``: a torch device, ``auto`` = CUDA when available; ``retention``: the untuned prompts
    whose answers are compared with the baseline's (the starting model).
    """

    model: str | None = None
    baseline: str | None = None
    data: DataConfig = field(default_factory=DataConfig)
    device: str = "auto"
    video: VideoEvalConfig = field(default_factory=VideoEvalConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)

    def validate(self) -> None:
        super().validate()
        require_device(self)
