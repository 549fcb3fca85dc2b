"""``PredictConfig``: what ``sam3tune predict`` asks of which model."""

from __future__ import annotations

from dataclasses import dataclass, field

from sam3tune.config import require_device, require_range
from sam3tune.eval.config import MAX_QUERIES_PER_FORWARD, PostprocessConfig
from sam3tune.video.config import VideoConfig


@dataclass
class PredictConfig:
    """``model``: a ``save_pretrained`` folder, a hub id or tiny/small; ``prompts``: the text prompts,
    each asked on every image (category i of the results = i-th prompt); ``boxes`` / ``negative_boxes``:
    exemplar boxes ``[x0, y0, x1, y1]`` in pixels of the input images, asked with every prompt, or without
    a prompt as one query ``"visual"`` (``docs/eval.md``); ``postprocess``: which
    detections are kept (score >= 0.5 by default); ``overlays``: also draw one PNG per image;
    ``semantic``: also write the semantic head's label map of each image (docs/semantic.md);
    ``device``: a torch device, ``auto`` = CUDA when available; ``video``: the ``predict --video`` settings
    (docs/video.md)."""

    model: str | None = None
    prompts: list[str] = field(default_factory=list)
    boxes: list[list[float]] = field(default_factory=list)
    negative_boxes: list[list[float]] = field(default_factory=list)
    postprocess: PostprocessConfig = field(default_factory=lambda: PostprocessConfig(score_threshold=0.5))
    overlays: bool = True
    semantic: bool = False  # also write semantic/<image>.png: the semantic head's label map
    device: str = "auto"
    max_queries_per_forward: int = MAX_QUERIES_PER_FORWARD  # more prompts are asked in several passes
    video: VideoConfig = field(default_factory=VideoConfig)

    def __post_init__(self) -> None:
        require_device(self)
        require_range(self, "max_queries_per_forward", low=1)
