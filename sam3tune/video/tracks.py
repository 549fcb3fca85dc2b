"""One frame's tracked objects, from the video model's output to the frame's pixels.

The model gives each live track a low-resolution mask logit map on its square input canvas. As
transformers' ``Sam3VideoProcessor.postprocess_outputs`` does (which needs torchvision, absent here), each
map is resized bilinearly to the frame, thresholded at 0, and tracks with empty masks, tracks suppressed on
this frame and tracks removed by the hot-start rules are dropped; where tracks of one prompt overlap, the
pixel goes to the track with the higher tracker score. Boxes are the masks' extents. The input canvas is a
plain resize of the frame (sam3tune's eval transform), so the canvas maps onto the frame axis by axis.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class TrackedObject:
    """One track on one frame: ``track_id`` (the model's object id), ``prompt`` index (0-based),
    ``score`` (the detection score that started the track), ``tracker_score`` (the tracker's object
    probability on this frame; the detection score on the track's first frame), ``mask`` (H, W) bool and
    ``box`` xyxy pixels (inclusive-exclusive, from the mask)."""

    track_id: int
    prompt: int
    score: float
    tracker_score: float
    mask: np.ndarray
    box: tuple[float, float, float, float]


def frame_objects(output, session, height: int, width: int) -> list[TrackedObject]:
    """The tracked objects of one ``Sam3VideoSegmentationOutput`` on a ``height x width`` frame."""
    hidden = set(output.suppressed_obj_ids or ()) | set(session.hotstart_removed_obj_ids)
    ids = [i for i in sorted(output.obj_id_to_mask) if i not in hidden]
    if not ids:
        return []
    logits = torch.cat([output.obj_id_to_mask[i] for i in ids], dim=0).float()  # (N, h, w)
    masks = (
        F.interpolate(logits[:, None], size=(height, width), mode="bilinear", align_corners=False)[:, 0] > 0
    )
    tracker_scores = torch.tensor([float(output.obj_id_to_tracker_score.get(i, 0.0)) for i in ids])
    prompts = [session.obj_id_to_prompt_id[i] for i in ids]
    masks = _exclusive(masks, tracker_scores, prompts)
    objects = []
    for k, track_id in enumerate(ids):
        mask = masks[k].cpu().numpy()
        if not mask.any():
            continue
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        objects.append(
            TrackedObject(
                track_id=int(track_id),
                prompt=int(prompts[k]),
                score=float(output.obj_id_to_score[track_id]),
                tracker_score=float(tracker_scores[k]),
                mask=mask,
                box=(float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)),
            )
        )
    return objects


def _exclusive(masks: torch.Tensor, scores: torch.Tensor, prompts: list[int]) -> torch.Tensor:
    """Within each prompt, a pixel claimed by several masks stays only in the highest-scoring one."""
    result = masks.clone()
    groups = torch.tensor(prompts)
    for prompt in groups.unique().tolist():
        members = torch.nonzero(groups == prompt).flatten()
        if members.numel() < 2:
            continue
        claims = torch.where(masks[members], scores[members, None, None], torch.tensor(-1.0))
        winner = claims.argmax(dim=0)
        for rank, index in enumerate(members.tolist()):
            result[index] &= winner == rank
    return result
