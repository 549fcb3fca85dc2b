"""transformers' video inference session with memory that does not grow with the video's length.

``Sam3VideoInferenceSession`` keeps, for the whole video: every frame's pixels (3 x 1008 x 1008 float32,
12 MB a frame at full size: 216 GB for ten minutes at 30 fps), every tracked frame's outputs per object
(memory features, object pointer, masks) and per-frame bookkeeping that it deep-copies on every frame.
Tracking only ever looks back a fixed distance, so :meth:`BoundedSession.prune` drops, after each frame:

* the frames' pixels (the current frame's features are cached by the model; no later step reads pixels);
* per object, the non-conditioning outputs older than the look-back window (the tracker reads the last
  ``num_maskmem - 1`` frames' memories and ``max_object_pointers_in_encoder - 1`` frames' pointers), the
  frames-tracked records and mask prompts older than that, and the masks of every past frame's outputs
  (at full size 4.4 MB an object a frame; its memory features, 2 MB, and pointer are what is read again);
* per object, the conditioning outputs beyond the ``keep_conditioning`` most recent: the tracker attends to
  the ``max_cond_frame_num`` closest ones (for forward tracking: the most recent), so keeping that many
  leaves the memory attention unchanged; transformers also takes an object pointer from *every* earlier
  conditioning frame, which this caps at the same number (Meta's SAM 2 takes them from the selected
  frames only);
* per-frame scores and suppression sets of past frames, and the hot-start lists beyond the thresholds
  they are compared with (only their length is ever read).

What still grows is per object, not per frame: a track's score and a few counters, for every object ever
seen (a track that leaves the view is kept, as in transformers; ``tracker.max_num_objects`` caps them).
``num_frames`` is the video's length when known (what transformers' offline propagation uses), else the
frames seen so far (its streaming mode).
"""

from __future__ import annotations

import torch
from transformers.models.sam3_video.modeling_sam3_video import Sam3VideoInferenceSession

#: per-object outputs of a frame that only that frame's own step reads (its memory and pointer stay)
FRAME_MASKS = ("pred_masks", "high_res_masks")


class BoundedSession(Sam3VideoInferenceSession):
    """A :class:`Sam3VideoInferenceSession` whose :meth:`prune` bounds its memory (module docstring)."""

    def __init__(
        self,
        *,
        window: int,
        keep_conditioning: int,
        unmatch_thresh: int,
        dup_thresh: int,
        total_frames: int | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__(
            inference_device=device, inference_state_device=device, video_storage_device=device, dtype=dtype
        )
        self.window = window
        self.keep_conditioning = keep_conditioning
        self.unmatch_thresh = unmatch_thresh
        self.dup_thresh = dup_thresh
        self.total_frames = total_frames
        self.frames_seen = 0

    @property
    def num_frames(self) -> int | None:
        return self.total_frames if self.total_frames is not None else self.frames_seen

    def add_new_frame(self, pixel_values: torch.Tensor, frame_idx: int | None = None) -> int:
        self.frames_seen += 1
        return super().add_new_frame(pixel_values, frame_idx)

    def prune(self, frame_idx: int) -> None:
        """Drop what no later frame reads (module docstring); call after the model's step on ``frame_idx``."""
        self.processed_frames = {}
        oldest = frame_idx - self.window
        for outputs in self.output_dict_per_obj.values():
            recent = outputs["non_cond_frame_outputs"]
            for t in [t for t in recent if t < oldest]:
                del recent[t]
            conditioning = outputs["cond_frame_outputs"]
            for t in sorted(conditioning)[: -self.keep_conditioning]:
                del conditioning[t]
            for kept in (recent, conditioning):
                for t, output in kept.items():
                    if t < frame_idx:  # a past frame's masks: only its memory and pointer are read again
                        for name in FRAME_MASKS:
                            output.pop(name, None)
        for per_frame in (
            *self.frames_tracked_per_obj.values(),
            *self.mask_inputs_per_obj.values(),
            *self.point_inputs_per_obj.values(),
        ):
            for t in [t for t in per_frame if t < oldest]:
                del per_frame[t]
        for per_frame in (self.obj_id_to_tracker_score_frame_wise, self.suppressed_obj_ids):
            for t in [t for t in per_frame if t < frame_idx]:
                del per_frame[t]
        for frames in self.unmatched_frame_inds.values():
            del frames[: -self.unmatch_thresh]
        for frames in self.overlap_pair_to_frame_inds.values():
            del frames[: -self.dup_thresh]

    def tensor_bytes(self) -> int:
        """Bytes of every tensor the session holds (frames, outputs, inputs, cached features)."""
        seen: set[int] = set()
        total = 0

        def visit(value) -> None:
            nonlocal total
            if isinstance(value, torch.Tensor):
                if id(value) not in seen:
                    seen.add(id(value))
                    total += value.numel() * value.element_size()
            elif isinstance(value, dict):
                for item in value.values():
                    visit(item)
            elif isinstance(value, (list, tuple, set)):
                for item in value:
                    visit(item)

        visit(self.__dict__)
        for item in vars(self.cache).values():
            visit(item)
        return total
