"""Concept tracking in a video, streamed: every prompt's instances found by the (tuned) detector on each
frame and carried from frame to frame by SAM 3's tracker.

>>> predictor = VideoPredictor.load("exported-video-model/")
>>> for frame in predictor.track(open_frames("clip.mp4"), ["star"]):   # one frame at a time
...     frame.objects   # TrackedObject: track_id, prompt, score, mask (H, W), box
>>> predictor.predict_video("clip.mp4", ["star"], "out/")   # frames.jsonl, tracks.json, overlay.mp4

Each frame is resized to the model's square input as in evaluation (sam3tune's eval transform), run through
transformers' ``Sam3VideoModel`` step by step on a :class:`~sam3tune.video.session.BoundedSession`, and its
objects are post-processed into the frame's pixels (:mod:`sam3tune.video.tracks`). The model holds a frame's
output back ``tracker.hotstart_delay`` frames (15 for SAM 3) to drop tracks that do not hold up, as
transformers' offline propagation does, so a frame is reported that many frames after it was read; those
frames (and their outputs) are the only other thing held.

Memory: the model, one decoded frame per held-back frame, and the session's memory bank, which is bounded
(per track: ``num_maskmem`` memories and ``max_object_pointers_in_encoder`` pointers of recent frames and
``conditioning_frames`` conditioning frames). ``bench/video_memory.py`` measures it.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from sam3tune.data.transforms import eval_geometry, normalize, transform_image
from sam3tune.eval.config import PostprocessConfig
from sam3tune.eval.postprocess import Detections, postprocess
from sam3tune.output_files import claim_output_folder, write_text_atomic, writing
from sam3tune.overlay import draw_tracks
from sam3tune.progress import progress_bar
from sam3tune.video.config import VideoConfig
from sam3tune.video.frames import FrameReader
from sam3tune.video.model import VideoModelBundle, load_video_model
from sam3tune.video.outputs import SPOOL, OverlayWriter, TrackSpool, join_lists, object_records
from sam3tune.video.session import BoundedSession
from sam3tune.video.tracks import TrackedObject, frame_objects

log = logging.getLogger(__name__)

#: What ``predict_video`` writes in its output folder (``--overwrite`` replaces exactly these).
OUTPUTS = (
    "frames.jsonl",
    "tracks.json",
    "index.json",
    "overlay.mp4",
    "detections.jsonl",
    "detections.json",
    SPOOL,
)


@dataclass
class TrackedFrame:
    """One processed frame: ``frame`` (0-based among processed frames), ``source_frame`` (index in the
    source), ``image`` (the decoded RGB frame), its tracked ``objects`` and, when asked, the detector's own
    ``detections`` on it (one :class:`~sam3tune.eval.postprocess.Detections` per prompt)."""

    frame: int
    source_frame: int
    image: Image.Image
    objects: list[TrackedObject]
    detections: list[Detections] | None = None


class DetectorTap:
    """Records the video model's detector outputs, one call per prompt on each frame, as the outputs dict
    of ``docs/architecture.md`` (boxes cxcywh in [0, 1]; transformers' video call gives xyxy)."""

    def __init__(self, detector: torch.nn.Module):
        self.calls: list[dict[str, torch.Tensor]] = []
        self.handle = detector.register_forward_hook(self._record)

    def _record(self, module, args, output) -> None:
        x0, y0, x1, y1 = output.pred_boxes.unbind(-1)
        self.calls.append(
            {
                "pred_logits": output.pred_logits,
                "pred_boxes": torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], dim=-1),
                "presence_logits": output.presence_logits,
                "pred_masks": output.pred_masks,
            }
        )

    def take(self) -> dict[str, torch.Tensor]:
        """The calls since the last ``take``, concatenated (one row per call, in call order)."""
        calls, self.calls = self.calls, []
        return {key: torch.cat([c[key] for c in calls]) for key in calls[0]}

    def remove(self) -> None:
        self.handle.remove()


@dataclass
class PredictedVideo:
    """What :meth:`VideoPredictor.predict_video` wrote: frames done, tracks, whether it finished."""

    out_dir: Path
    frames: int = 0
    tracks: int = 0
    detections: int = 0
    skipped: list[dict] = field(default_factory=list)
    complete: bool = False
    seconds: float = 0.0


class VideoPredictor:
    """A SAM 3 video model with its tokenizer and the ``predict --video`` settings."""

    def __init__(self, bundle: VideoModelBundle, config: VideoConfig | None = None, device: str = "cpu"):
        self.bundle = bundle
        self.config = config or VideoConfig()
        self.device = torch.device(device)
        model = bundle.model
        for name, value in self.config.tracker.values().items():
            setattr(model, name, value)  # the model reads its settings from attributes at every step
        if self.config.score_threshold is not None:
            model.score_threshold_detection = self.config.score_threshold
        if model.hotstart_delay > 0 and (
            model.hotstart_unmatch_thresh > model.hotstart_delay
            or model.hotstart_dup_thresh > model.hotstart_delay
        ):
            raise ValueError(
                "video.tracker.hotstart_unmatch_thresh and hotstart_dup_thresh must not exceed "
                "hotstart_delay "
                f"({model.hotstart_unmatch_thresh}, {model.hotstart_dup_thresh} > {model.hotstart_delay})"
            )

    @classmethod
    def load(cls, spec: str | Path, config: VideoConfig | None = None, device: str = "cpu") -> VideoPredictor:
        """Load a video model folder (``sam3tune export --format video``, ``facebook/sam3``)."""
        config = config or VideoConfig()
        bundle = load_video_model(spec, prompt_token=config.prompt_token, device=device)
        return cls(bundle, config, device)

    def new_session(self, total_frames: int | None = None) -> BoundedSession:
        """An empty session with this model's look-back window."""
        model = self.bundle.model
        tracker = model.tracker_model.config
        keep = self.config.conditioning_frames or max(1, int(tracker.max_cond_frame_num))
        return BoundedSession(
            window=max(int(tracker.num_maskmem), int(tracker.max_object_pointers_in_encoder)) + 1,
            keep_conditioning=keep,
            unmatch_thresh=int(model.hotstart_unmatch_thresh),
            dup_thresh=int(model.hotstart_dup_thresh),
            total_frames=total_frames,
            device=self.device,
        )

    def add_prompts(self, session: BoundedSession, prompts: Sequence[str]) -> None:
        """Tokenise each prompt with the model's own tokenizer (Meta's ids for SAM 3) into the session."""
        for text in prompts:
            prompt_id = session.add_prompt(text)
            ids, mask = self.bundle.tokenize([text])
            session.prompt_input_ids[prompt_id] = ids.to(self.device)
            session.prompt_attention_masks[prompt_id] = mask.to(self.device)

    def pixels(self, image: Image.Image) -> torch.Tensor:
        """A frame as the model's input ``(3, S, S)`` float32, resized and normalised (mean = std = 0.5) as
        in evaluation."""
        return normalize(transform_image(image.convert("RGB"), eval_geometry(self.bundle.image_size)))

    def track(
        self,
        frames: Iterable[tuple[int, Image.Image]],
        prompts: Sequence[str],
        total_frames: int | None = None,
        detections: PostprocessConfig | None = None,
    ) -> Iterator[TrackedFrame]:
        """Track every prompt through ``frames`` (``(source index, RGB image)`` pairs, e.g. a
        :class:`~sam3tune.video.frames.FrameReader`), yielding each frame once the hot-start delay has
        passed (all held frames at the end). With ``detections``, each frame also carries the detector's
        own detections, kept as those settings say."""
        prompts = _check_prompts(prompts)
        model = self.bundle.model
        session = self.new_session(total_frames)
        self.add_prompts(session, prompts)
        tap = DetectorTap(model.detector_model) if detections is not None else None
        held: deque = deque()
        try:
            for frame, (source_frame, image) in enumerate(frames):
                session.add_new_frame(self.pixels(image), frame)
                output = model(inference_session=session, frame_idx=frame)
                session.prune(frame)
                session.hotstart_removed_obj_ids.update(output.removed_obj_ids or ())
                found = None
                if tap is not None:
                    size = (image.height, image.width)
                    found = postprocess(tap.take(), [size] * len(prompts), detections)
                held.append((frame, source_frame, image, output, found))
                if len(held) > model.hotstart_delay:
                    yield self._finish(held.popleft(), session)
            while held:
                yield self._finish(held.popleft(), session)
        finally:
            if tap is not None:
                tap.remove()

    @staticmethod
    def _finish(item, session) -> TrackedFrame:
        frame, source_frame, image, output, found = item
        objects = frame_objects(output, session, image.height, image.width)
        return TrackedFrame(frame, source_frame, image, objects, found)

    def predict_video(
        self,
        video: str | Path | FrameReader,
        prompts: Sequence[str],
        out_dir: str | Path,
        *,
        overwrite: bool = False,
        progress: bool = True,
        detections: PostprocessConfig | None = None,
    ) -> PredictedVideo:
        """Track ``prompts`` through ``video`` (a path, read with this predictor's frame settings, or a
        reader) into ``out_dir`` (:data:`OUTPUTS`, see :mod:`sam3tune.video.outputs`) and ``index.json``
        (source, frame rate, size, processed frames, categories, settings, ``skipped`` frame images,
        ``complete``). With ``detections`` (or ``video.detections``, then with default postprocessing), also
        ``detections.json``: the detector's own detections, COCO results with ``image_id`` = processed frame
        + 1 and ``category_id`` = prompt + 1. Whatever stops the run, the frames done are kept:
        ``frames.jsonl`` (and ``detections.jsonl``) have them as they finished, and ``tracks.json``,
        ``detections.json`` and ``index.json`` are written on the way out."""
        if detections is None and self.config.detections:
            detections = PostprocessConfig(score_threshold=0.5)
        prompts = _check_prompts(prompts)
        settings = self.config
        reader = video if isinstance(video, FrameReader) else settings.open(video)
        out_dir = claim_output_folder(out_dir, OUTPUTS, overwrite)
        done = PredictedVideo(out_dir)
        spool = TrackSpool(out_dir / SPOOL)
        writer: OverlayWriter | None = None
        fps = reader.fps / reader.stride
        size: tuple[int, int] | None = None
        clock = time.perf_counter()
        journal_path, found_path = out_dir / "frames.jsonl", out_dir / "detections.jsonl"
        try:
            with (
                writing(journal_path),
                open(journal_path, "w", encoding="utf-8") as journal,
                open(found_path, "w", encoding="utf-8") if detections is not None else nullcontext() as found,
            ):
                bar = progress_bar(total=reader.count, desc="track", unit="frame", disable=not progress)
                frames = self.track(reader, prompts, total_frames=reader.count, detections=detections)
                for tracked in frames:
                    size = tracked.image.size
                    records = object_records(tracked.objects, prompts)
                    line = {
                        "frame": tracked.frame,
                        "source_frame": tracked.source_frame,
                        "time": round(tracked.source_frame / reader.fps, 6),
                        "objects": records,
                    }
                    journal.write(json.dumps(line) + "\n")
                    journal.flush()
                    if found is not None:
                        results = [
                            r
                            for c, d in enumerate(tracked.detections, 1)
                            for r in d.to_coco_results(tracked.frame + 1, c)
                        ]
                        found.write(json.dumps(results) + "\n")
                        found.flush()
                    spool.add(tracked.frame, records)
                    if settings.overlay:
                        if writer is None:
                            writer = OverlayWriter(
                                out_dir / "overlay.mp4", fps, *size, codec=settings.overlay_codec
                            )
                        writer.write(
                            draw_tracks(
                                tracked.image,
                                [(o.track_id, prompts[o.prompt], o.mask, o.box) for o in tracked.objects],
                            )
                        )
                    done.frames += 1
                    done.detections += len(records)
                    bar.update(1)
                bar.close()
            done.complete = reader.error is None
        finally:
            done.seconds = time.perf_counter() - clock
            if writer is not None:
                writer.close()
            done.tracks = spool.write_results(out_dir / "tracks.json", done.frames)
            spool.remove()
            if detections is not None and found_path.is_file():
                join_lists(found_path, out_dir / "detections.json")
                found_path.unlink()
            done.skipped = list(reader.skipped)
            index = {
                "video": {
                    "path": reader.path,
                    "fps": reader.fps,
                    "width": size[0] if size else None,
                    "height": size[1] if size else None,
                    "start": reader.start,
                    "end": reader.end,
                    "stride": reader.stride,
                    "frames": done.frames,
                },
                "categories": [{"id": i, "name": p} for i, p in enumerate(prompts, 1)],
                "model": self.bundle.source,
                "prompt_token": self.bundle.prompt_token,
                "tracks": done.tracks,
                "overlay": "overlay.mp4" if writer is not None else None,
                "skipped": done.skipped,
                "error": reader.error,
                "complete": done.complete,
                "seconds": round(done.seconds, 3),
            }
            write_text_atomic(out_dir / "index.json", json.dumps(index, indent=2))
        return done


def _check_prompts(prompts: Sequence[str]) -> list[str]:
    if isinstance(prompts, str):
        raise TypeError("prompts must be a list of strings, got a single string")
    prompts = [p.strip() for p in prompts]
    if not prompts or any(not p for p in prompts):
        raise ValueError(f"give at least one non-empty prompt, got {prompts!r}")
    if len(set(prompts)) != len(prompts):
        raise ValueError(f"prompts repeat: {prompts!r}")
    return prompts
