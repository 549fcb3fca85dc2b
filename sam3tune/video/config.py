"""Settings of ``sam3tune predict --video`` (the ``video.*`` keys of ``PredictConfig``)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from sam3tune.config import require, require_range


@dataclass
class TrackerSettings:
    """transformers' ``Sam3VideoConfig`` settings of the detection-tracking loop; None keeps the model
    folder's value (``facebook/sam3``: the defaults listed in ``docs/video.md``)."""

    det_nms_thresh: float | None = None  # mask-IoU NMS among one frame's detections
    assoc_iou_thresh: float | None = None  # detection <-> track match (loose)
    trk_assoc_iou_thresh: float | None = None  # a track counts as matched above this (strict)
    new_det_thresh: float | None = None  # a detection matching no track starts one above this score
    recondition_on_trk_masks: bool | None = None
    hotstart_delay: int | None = None  # frames held back to remove tracks that do not hold up
    hotstart_unmatch_thresh: int | None = None
    hotstart_dup_thresh: int | None = None
    suppress_unmatched_only_within_hotstart: bool | None = None
    init_trk_keep_alive: int | None = None
    max_trk_keep_alive: int | None = None
    min_trk_keep_alive: int | None = None
    suppress_overlapping_based_on_recent_occlusion_threshold: float | None = None
    decrease_trk_keep_alive_for_empty_masklets: bool | None = None
    fill_hole_area: int | None = None
    max_num_objects: int | None = None
    recondition_every_nth_frame: int | None = None
    high_conf_thresh: float | None = None
    high_iou_thresh: float | None = None

    def __post_init__(self) -> None:
        require_range(
            self,
            "det_nms_thresh",
            "assoc_iou_thresh",
            "trk_assoc_iou_thresh",
            "new_det_thresh",
            "suppress_overlapping_based_on_recent_occlusion_threshold",
            "high_conf_thresh",
            "high_iou_thresh",
            low=0.0,
            high=1.0,
        )
        require_range(
            self,
            "hotstart_delay",
            "hotstart_unmatch_thresh",
            "hotstart_dup_thresh",
            "fill_hole_area",
            "recondition_every_nth_frame",
            low=0,
        )
        require_range(self, "max_num_objects", low=1)

    def values(self) -> dict[str, float | int | bool]:
        """The settings given (not None), by ``Sam3VideoConfig`` field name."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


@dataclass
class VideoConfig:
    """What ``predict --video`` reads and how it tracks.

    Frames: ``start`` (first source frame, 0-based), ``end`` (exclusive; null = to the end), ``stride``
    (every n-th frame), ``max_frames`` (at most this many processed; null = all), ``fps`` (frame rate of a
    frame folder or glob; video files keep their own). ``score_threshold``: per-frame detections kept
    (transformers' ``score_threshold_detection``; null = the model's, 0.5 for SAM 3). ``prompt_token``:
    ``meta`` (Meta's text-only forward: the geometry CLS token appended, as SAM 3 was trained) or ``hf``
    (transformers' video call, without it); null = the export's recorded mode, else ``meta``.
    ``conditioning_frames``: conditioning (mask-prompted) frames kept per track (null = the tracker's
    ``max_cond_frame_num``, 4 for SAM 3): with ``tracker.recondition_every_nth_frame`` every track gains one
    every 16 frames, so this bounds the memory bank. ``overlay``: write ``overlay.mp4``; ``overlay_codec``:
    the encoder (libx264, else mpeg4 if the PyAV build lacks it). ``detections``: also write the detector's
    own detections on every frame (``detections.json``, COCO results; which are kept: the ``postprocess.*``
    keys), to judge detection apart from tracking."""

    start: int = 0
    end: int | None = None
    stride: int = 1
    max_frames: int | None = None
    fps: float = 30.0
    score_threshold: float | None = None
    prompt_token: str | None = None
    conditioning_frames: int | None = None
    overlay: bool = True
    overlay_codec: str = "libx264"
    detections: bool = False
    tracker: TrackerSettings = field(default_factory=TrackerSettings)

    def open(self, path):
        """A :class:`~sam3tune.video.frames.FrameReader` of ``path`` with these frame settings."""
        from sam3tune.video.frames import open_frames

        return open_frames(
            path, start=self.start, end=self.end, stride=self.stride, max_frames=self.max_frames, fps=self.fps
        )

    def __post_init__(self) -> None:
        require_range(self, "start", low=0)
        require_range(self, "stride", "max_frames", "conditioning_frames", low=1)
        require_range(self, "fps", low=0.0, low_open=True)
        require_range(self, "score_threshold", low=0.0, high=1.0)
        require(self.end is None or self.end > self.start, "end", self.end, f"must be > start ({self.start})")
        require(
            self.prompt_token in (None, "meta", "hf"), "prompt_token", self.prompt_token, "must be meta or hf"
        )
