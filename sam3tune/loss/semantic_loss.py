"""The semantic-segmentation loss of SAM 3's semantic head (Meta's ``SemanticSegCriterion``), from the maths.

A semantic query is one prompt (a class) on one image; its target is the union of that class's pixels
(empty when the class is absent). The model's ``semantic_seg`` ``(B, 1, h, w)`` holds one logit map per
query. With the settings of Meta's segmentation recipe (``presence_head=True``, ``presence_loss=False``,
``focal=True``, ``focal_alpha=0.6``, ``focal_gamma=2``, ``downsample=False``; weights 20 / 30), for query
``b`` with logits ``x_b`` upsampled bilinearly (``align_corners=False``) to the target size and target
``y_b``:

- ``F_b = mean over pixels of alpha_t (1 - p_t)^gamma BCE(x, y)`` (sigmoid focal loss);
- ``D_b = 1 - (2 sum(p y) + 1) / (sum(p) + sum(y) + 1)`` with ``p = sigmoid(x)`` (dice);
- ``P_b = [y_b has a pixel]``, ``N = sum_b P_b``;
- ``loss_semantic_seg = sum_b P_b F_b / (N + 1e-6)``, ``loss_semantic_dice = sum_b P_b D_b / (N + 1e-6)``:
  queries of absent classes add nothing here; the decoder's presence loss teaches "not here".

Pixels marked invalid (a label map's ignore index) are left out of every sum and mean; with all pixels
valid the terms equal Meta's. :class:`SemanticCriterion` adds the decoder's presence loss of the instance
recipe (``presence_loss``, weight 20, every decoder layer) and scales the total by ``sqrt(B)`` as the
instance criterion does; boxes, classification and instance masks are not computed for such queries.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sam3tune.loss.classification_loss import presence_accuracy, presence_loss
from sam3tune.loss.focal_loss import sigmoid_focal_loss

SEMANTIC_EPS = 1e-6  # Meta's guard in the division by the number of present classes


@dataclass
class SemanticLossConfig:
    """Settings of the semantic terms; defaults = the semantic criterion of Meta's segmentation recipe."""

    loss_semantic_seg: float = 20.0  # weight of the focal term
    loss_semantic_dice: float = 30.0  # weight of the dice term
    focal_alpha: float = 0.6
    focal_gamma: float = 2.0


def semantic_terms(
    semantic_logits: Tensor,
    targets: Tensor,
    valid: Tensor | None = None,
    alpha: float = 0.6,
    gamma: float = 2.0,
) -> dict[str, Tensor]:
    """``loss_semantic_seg`` and ``loss_semantic_dice`` (scalars) of a batch of semantic queries.

    ``semantic_logits`` ``(B, 1, h, w)`` or ``(B, h, w)``; ``targets`` ``(B, H, W)`` bool (the class's
    pixels); ``valid`` ``(B, H, W)`` bool or None (all pixels count). See the module docstring.
    """
    logits = semantic_logits.squeeze(1) if semantic_logits.dim() == 4 else semantic_logits
    if logits.shape[0] != targets.shape[0]:
        raise ValueError(f"{logits.shape[0]} semantic maps for {targets.shape[0]} targets")
    if tuple(logits.shape[-2:]) != tuple(targets.shape[-2:]):
        logits = F.interpolate(
            logits.unsqueeze(1).float(), size=targets.shape[-2:], mode="bilinear", align_corners=False
        ).squeeze(1)
    logits = logits.float()
    y = targets.to(logits.dtype)
    weight = torch.ones_like(y) if valid is None else valid.to(logits.dtype)
    y = y * weight
    focal = (sigmoid_focal_loss(logits, y, alpha, gamma) * weight).flatten(1).sum(1)
    focal = focal / weight.flatten(1).sum(1).clamp(min=1)
    p = logits.sigmoid() * weight
    dice = 1 - (2 * (p * y).flatten(1).sum(1) + 1) / (p.flatten(1).sum(1) + y.flatten(1).sum(1) + 1)
    present = y.flatten(1).any(1).to(logits.dtype)
    count = present.sum() + SEMANTIC_EPS
    return {
        "loss_semantic_seg": (focal * present).sum() / count,
        "loss_semantic_dice": (dice * present).sum() / count,
    }


def semantic_iou(semantic_logits: Tensor, targets: Tensor, valid: Tensor | None = None) -> Tensor:
    """Mean IoU of ``sigmoid > 0.5`` over the queries whose target has a pixel (1 when none has);
    Meta's ``miou_semantic_seg`` (logged only). Shapes as :func:`semantic_terms`."""
    logits = semantic_logits.squeeze(1) if semantic_logits.dim() == 4 else semantic_logits
    if tuple(logits.shape[-2:]) != tuple(targets.shape[-2:]):
        logits = F.interpolate(
            logits.unsqueeze(1).float(), size=targets.shape[-2:], mode="bilinear", align_corners=False
        ).squeeze(1)
    keep = torch.ones_like(targets) if valid is None else valid
    pred, target = (logits > 0) & keep, targets & keep
    present = target.flatten(1).any(1)
    if not bool(present.any()):
        return logits.new_ones(())
    inter = (pred & target).flatten(1).sum(1).float()
    union = (pred | target).flatten(1).sum(1).float()
    return (inter / union.clamp(min=1))[present].sum() / present.sum()


class SemanticCriterion(nn.Module):
    """Loss of semantic queries: ``criterion(outputs, targets) -> dict`` with ``"loss"`` and the terms.

    ``outputs``: ``semantic_seg`` ``(B, 1, h, w)``, ``presence_logits`` ``(B, 1)`` and, optionally,
    ``aux_outputs`` (their ``presence_logits`` are used). ``targets``: one dict per query with
    ``semantic_mask`` ``(H, W)`` bool and optionally ``semantic_valid`` ``(H, W)`` bool.

    ``loss = s * (w_seg loss_semantic_seg + w_dice loss_semantic_dice + w_p sum_layers presence_loss)``
    with ``s = sqrt(B)`` when ``scale_by_find_batch_size``; presence target = the class has a pixel.
    """

    def __init__(
        self,
        semantic: SemanticLossConfig | None = None,
        presence_weight: float = 20.0,
        presence_alpha: float = 0.5,
        presence_gamma: float = 0.0,
        scale_by_find_batch_size: bool = True,
    ) -> None:
        super().__init__()
        self.semantic = semantic or SemanticLossConfig()
        self.presence_weight = presence_weight
        self.presence_alpha = presence_alpha
        self.presence_gamma = presence_gamma
        self.scale_by_find_batch_size = scale_by_find_batch_size

    def forward(
        self, outputs: Mapping[str, object], targets: Sequence[Mapping[str, Tensor]]
    ) -> dict[str, Tensor]:
        if "semantic_seg" not in outputs:
            raise ValueError("semantic queries need outputs['semantic_seg'] (the model's semantic head)")
        semantic = outputs["semantic_seg"]
        if not isinstance(semantic, Tensor) or semantic.dim() != 4 or semantic.shape[0] != len(targets):
            raise ValueError(
                f"outputs['semantic_seg'] must be (B, 1, h, w) with B = {len(targets)} queries, got "
                f"{tuple(getattr(semantic, 'shape', ()))}"
            )
        if any("semantic_mask" not in t for t in targets):
            raise ValueError("every target of a semantic batch needs 'semantic_mask' (H, W) bool")
        masks = torch.stack([t["semantic_mask"] for t in targets]).to(semantic.device)
        valid = None
        if any("semantic_valid" in t for t in targets):
            valid = torch.stack(
                [t.get("semantic_valid", torch.ones_like(t["semantic_mask"])) for t in targets]
            ).to(semantic.device)
        with torch.autocast(semantic.device.type, enabled=False):
            result = semantic_terms(
                semantic.float(), masks, valid, self.semantic.focal_alpha, self.semantic.focal_gamma
            )
            total = (
                self.semantic.loss_semantic_seg * result["loss_semantic_seg"]
                + self.semantic.loss_semantic_dice * result["loss_semantic_dice"]
            )
            present = (masks if valid is None else masks & valid).flatten(1).any(1)
            layers = [*outputs.get("aux_outputs", []), outputs]  # earliest first, final last
            suffixes = [f"_aux_{i}" for i in range(len(layers) - 1)] + [""]
            for layer, suffix in zip(layers, suffixes, strict=True):
                presence = layer.get("presence_logits")
                if presence is None:
                    continue
                logits = presence.float().reshape(1, -1)
                result[f"presence_loss{suffix}"] = presence_loss(
                    logits, present, self.presence_alpha, self.presence_gamma
                )[0]
                result[f"presence_dec_acc{suffix}"] = presence_accuracy(logits, present)[0]
                total = total + self.presence_weight * result[f"presence_loss{suffix}"]
            result["miou_semantic_seg"] = semantic_iou(semantic.detach(), masks, valid)
        scale = math.sqrt(len(targets)) if self.scale_by_find_batch_size else 1.0
        return {"loss": total * scale, **result}

    def weight_of(self, key: str) -> float:
        """Factor of ``result[key]`` in the total before the batch scale (0 for logged-only keys)."""
        if key in ("loss_semantic_seg", "loss_semantic_dice"):
            return getattr(self.semantic, key)
        if key.startswith("presence_loss"):
            return self.presence_weight
        return 0.0
