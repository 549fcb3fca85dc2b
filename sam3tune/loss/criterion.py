"""The SAM 3 training criterion: the official recipe's loss over every decoder layer and both query sets.

``loss = s * sum_k weight_of(k) * result[k]`` over the component keys ``k``, with ``s = sqrt(B)`` when
``scale_by_find_batch_size`` (B = number of queries in the batch). Component keys are
``<term><layer><branch>``: term ``loss_ce``, ``presence_loss``, ``loss_bbox``, ``loss_giou``, ``loss_mask``,
``loss_dice``; layer ``""`` (final decoder layer) or ``_aux_<i>`` (``i = 0`` the earliest); branch ``""``
(one-to-one queries) or ``_o2m`` (one-to-many queries). Values are unweighted: the ``_o2m`` ones are *not*
multiplied by ``o2m_weight`` (Meta's logs show them multiplied); :meth:`Sam3Criterion.weight_of` holds
every factor, and :meth:`Sam3Criterion.compute` is the one place where weights are applied.
Logged-only keys (weight 0): ``ce_f1`` and ``presence_dec_acc`` with the same suffixes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Literal

import torch
import torch.distributed as dist
from torch import Tensor, nn

from sam3tune.config import require, require_range
from sam3tune.loss.box_loss import box_pair_losses
from sam3tune.loss.classification_loss import (
    binary_f1,
    iou_aware_bce,
    iou_aware_soft_target,
    positive_map,
    presence_accuracy,
    presence_loss,
)
from sam3tune.loss.mask_loss import mask_pair_losses
from sam3tune.loss.matcher import HungarianMatcher, Matching, OneToManyMatcher
from sam3tune.loss.predictions import DecoderPredictions, QuerySet, parse_outputs
from sam3tune.loss.semantic_loss import SemanticLossConfig
from sam3tune.loss.targets import PackedTargets, pack_targets

LOGGED_ONLY_TERMS = ("ce_f1", "presence_dec_acc")
_KEY = re.compile(r"^(?P<term>[a-z0-9_]+?)(?P<layer>_aux_\d+)?(?P<branch>_o2m)?$")


@dataclass
class LossWeights:
    """Weight of each unweighted loss term (official recipe; masks from the segmentation variant)."""

    loss_ce: float = 20.0
    presence_loss: float = 20.0
    loss_bbox: float = 5.0
    loss_giou: float = 2.0
    loss_mask: float = 200.0
    loss_dice: float = 10.0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        # a negative weight would maximise its term
        require_range(self, *(f.name for f in fields(self)), low=0)


@dataclass
class HungarianMatcherConfig:
    """One-to-one matcher costs; ``alpha``, ``gamma`` shape its focal class cost."""

    cost_class: float = 2.0
    cost_bbox: float = 5.0
    cost_giou: float = 2.0
    alpha: float = 0.25
    gamma: float = 2.0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        require_range(self, "cost_class", "cost_bbox", "cost_giou", "gamma", low=0)
        require_range(self, "alpha", low=0, high=1)


@dataclass
class OneToManyMatcherConfig:
    """One-to-many (DAC) matcher: score ``alpha p + (1 - alpha) IoU``, top ``topk`` above ``threshold``."""

    alpha: float = 0.3
    threshold: float = 0.4
    topk: int = 4

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        require_range(self, "alpha", "threshold", low=0, high=1)
        require_range(self, "topk", low=1)


@dataclass
class CriterionConfig:
    """Settings of :class:`Sam3Criterion`; defaults = Meta's fine-tuning recipe (names as in its code)."""

    weights: LossWeights = field(default_factory=LossWeights)
    matcher: HungarianMatcherConfig = field(default_factory=HungarianMatcherConfig)
    o2m_matcher: OneToManyMatcherConfig = field(default_factory=OneToManyMatcherConfig)
    # One-to-many branch: weight of all its terms; its auxiliary layers are matched one-to-one (Hungarian)
    # unless use_o2m_matcher_on_o2m_aux.
    o2m_weight: float = 2.0
    use_o2m_matcher_on_o2m_aux: bool = False
    # num_boxes (divisor of the box and mask terms): "global" averages the GT count over processes,
    # "local" uses this process's count, "none" uses 1.
    normalization: Literal["global", "local", "none"] = "global"
    normalize_by_valid_object_num: bool = False  # count only GT boxes with width and height > 0
    scale_by_find_batch_size: bool = True  # multiply the total (only) by sqrt(number of queries)
    # IoU-aware classification (IABCEMdetr): soft target max(0.01, p^alpha IoU^(1-alpha)), positives
    # weighted by pos_weight, negatives by p^gamma; rows without a visible GT get no classification loss.
    pos_weight: float = 10.0
    alpha: float = 0.25
    gamma: float = 2.0
    use_presence: bool = True
    pad_n_queries: int | None = 200
    pad_scale_pos: float = 1.0
    presence_alpha: float = 0.5
    presence_gamma: float = 0.0
    # Masks (final layer only): focal + dice; num_sample_points switches to point sampling.
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    num_sample_points: int | None = None
    oversample_ratio: float = 3.0
    importance_sample_ratio: float = 0.75
    # Semantic queries (label-map datasets): the semantic head's focal + dice terms, see semantic_loss.py.
    semantic: SemanticLossConfig = field(default_factory=SemanticLossConfig)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        require(
            self.normalization in ("global", "local", "none"),
            "normalization",
            self.normalization,
            "must be 'global', 'local' or 'none'",
        )
        require_range(self, "o2m_weight", "gamma", "presence_gamma", "focal_gamma", low=0)
        require_range(self, "pos_weight", low=0, low_open=True)
        require_range(
            self, "alpha", "presence_alpha", "focal_alpha", "importance_sample_ratio", low=0, high=1
        )
        require_range(self, "pad_n_queries", "num_sample_points", low=1)
        require_range(self, "pad_scale_pos", low=0)
        require_range(self, "oversample_ratio", low=1)


@dataclass(frozen=True)
class LossKey:
    """The parts of a component key ``<term><layer><branch>`` of :class:`Sam3Criterion`'s result.

    ``layer`` is the auxiliary layer index (0 = earliest decoder layer) or ``None`` for the final layer;
    ``one_to_many`` is True for the ``_o2m`` branch.
    """

    term: str
    layer: int | None
    one_to_many: bool


def split_key(key: str) -> LossKey:
    """``"loss_giou_aux_2_o2m"`` -> ``LossKey("loss_giou", 2, True)``; ``KeyError`` for a malformed key."""
    match = _KEY.match(key)
    if match is None:
        raise KeyError(f"{key!r} is not a loss component key (<term>[_aux_<i>][_o2m])")
    layer = match["layer"]
    return LossKey(match["term"], int(layer[len("_aux_") :]) if layer else None, match["branch"] is not None)


@dataclass(frozen=True)
class LayerMatchings:
    """Matching of every decoder layer (earliest first) of the one-to-one and one-to-many query sets."""

    one_to_one: list[Matching]
    one_to_many: list[Matching] | None


class Sam3Criterion(nn.Module):
    """SAM 3 loss: ``criterion(outputs, targets) -> dict``: ``"loss"`` (differentiable total) and the terms.

    ``outputs``/``targets`` follow docs/architecture.md (see :mod:`sam3tune.loss.predictions`,
    :mod:`sam3tune.loss.targets`); bad input raises ``ValueError``.
    """

    def __init__(self, config: CriterionConfig | None = None) -> None:
        super().__init__()
        self.config = config or CriterionConfig()
        m, o = self.config.matcher, self.config.o2m_matcher
        self.matcher = HungarianMatcher(m.cost_class, m.cost_bbox, m.cost_giou, m.alpha, m.gamma)
        self.o2m_matcher = OneToManyMatcher(o.alpha, o.threshold, o.topk)

    def forward(
        self, outputs: Mapping[str, object], targets: Sequence[Mapping[str, Tensor]]
    ) -> dict[str, Tensor]:
        predictions, packed = self.prepare(outputs, targets)
        # The loss runs in full precision even inside a mixed-precision (autocast) training step.
        with torch.autocast(predictions.one_to_one.logits.device.type, enabled=False):
            return self.compute(predictions, packed, self.match(predictions, packed))

    def prepare(
        self, outputs: Mapping[str, object], targets: Sequence[Mapping[str, Tensor]]
    ) -> tuple[DecoderPredictions, PackedTargets]:
        """Check and stack ``outputs``, check and pack ``targets``."""
        if isinstance(targets, Mapping) or not isinstance(targets, Sequence):
            raise ValueError(f"targets must be a list of dicts (one per query), got {type(targets).__name__}")
        predictions = parse_outputs(outputs, len(targets))
        logits = predictions.one_to_one.logits
        return predictions, pack_targets(targets, logits.device, logits.dtype)

    def match(self, predictions: DecoderPredictions, targets: PackedTargets) -> LayerMatchings:
        """Match every layer: Hungarian for one-to-one; for one-to-many the one-to-many matcher on the final
        layer and Hungarian on the auxiliary layers (unless ``use_o2m_matcher_on_o2m_aux``)."""
        o2o, o2m = predictions.one_to_one, predictions.one_to_many
        if o2m is None:
            return LayerMatchings(self.matcher.match_layers(o2o.logits, o2o.boxes, targets), None)
        num_layers = predictions.num_layers
        if self.config.use_o2m_matcher_on_o2m_aux:
            one_to_one = self.matcher.match_layers(o2o.logits, o2o.boxes, targets)
            one_to_many = [self.o2m_matcher(o2m.logits[i], o2m.boxes[i], targets) for i in range(num_layers)]
            return LayerMatchings(one_to_one, one_to_many)
        # One Hungarian pass over the one-to-one layers and the one-to-many auxiliary layers.
        if o2m.logits.shape[1:] == o2o.logits.shape[1:]:
            hungarian = self.matcher.match_layers(
                torch.cat((o2o.logits, o2m.logits[:-1])), torch.cat((o2o.boxes, o2m.boxes[:-1])), targets
            )
            one_to_one, aux = hungarian[:num_layers], hungarian[num_layers:]
        else:
            one_to_one = self.matcher.match_layers(o2o.logits, o2o.boxes, targets)
            aux = self.matcher.match_layers(o2m.logits[:-1], o2m.boxes[:-1], targets)
        final = self.o2m_matcher(o2m.logits[-1], o2m.boxes[-1], targets)
        return LayerMatchings(one_to_one, [*aux, final])

    def compute(
        self, predictions: DecoderPredictions, targets: PackedTargets, matchings: LayerMatchings
    ) -> dict[str, Tensor]:
        """All terms and the weighted total for given matchings."""
        num_boxes = self.num_boxes(targets)
        num_layers = predictions.num_layers
        layer_suffixes = [f"_aux_{i}" for i in range(num_layers - 1)] + [""]
        result: dict[str, Tensor] = {}
        branches = [("", predictions.one_to_one, matchings.one_to_one)]
        if predictions.one_to_many is not None:
            if matchings.one_to_many is None:
                raise ValueError("one-to-many outputs were given but no one-to-many matchings")
            branches.append(("_o2m", predictions.one_to_many, matchings.one_to_many))
        for branch, queries, layer_matchings in branches:
            if len(layer_matchings) != num_layers:
                raise ValueError(
                    f"expected {num_layers} matchings (one per layer), got {len(layer_matchings)}"
                )
            for term, per_layer in self._layer_terms(queries, layer_matchings, targets, num_boxes).items():
                for layer, suffix in enumerate(layer_suffixes):
                    result[f"{term}{suffix}{branch}"] = per_layer[layer]
            if queries.masks is not None:
                loss_mask, loss_dice = self._mask_terms(
                    queries.masks, layer_matchings[-1], targets, num_boxes, f"pred_masks{branch}"
                )
                result[f"loss_mask{branch}"] = loss_mask
                result[f"loss_dice{branch}"] = loss_dice

        # The one place where weights are applied.
        total = sum(weight * result[key] for key in result if (weight := self.weight_of(key)) != 0)
        return {"loss": total * self.loss_scale(targets.batch_size), **result}

    def weight_of(self, key: str) -> float:
        """Factor of ``result[key]`` in the total before the batch scale (0 for logged-only keys).

        E.g. ``weight_of("loss_ce_aux_2_o2m") == weights.loss_ce * o2m_weight``.
        """
        parts = split_key(key) if _KEY.match(key) else None
        if parts is not None and parts.term in LOGGED_ONLY_TERMS:
            return 0.0
        weights = vars(self.config.weights)
        if parts is None or parts.term not in weights:
            raise KeyError(f"{key!r} is not a loss term of Sam3Criterion (terms: {sorted(weights)})")
        return weights[parts.term] * (self.config.o2m_weight if parts.one_to_many else 1.0)

    def loss_scale(self, batch_size: int) -> float:
        """Factor of the whole total: ``sqrt(batch_size)`` with ``scale_by_find_batch_size``, else 1."""
        return math.sqrt(batch_size) if self.config.scale_by_find_batch_size else 1.0

    def contributions(self, result: Mapping[str, Tensor], batch_size: int) -> dict[str, float]:
        """Each weighted term's share of ``result["loss"]`` in loss units (they add up to it)."""
        scale = self.loss_scale(batch_size)
        return {
            key: scale * weight * float(value.detach())
            for key, value in result.items()
            if key != "loss" and (weight := self.weight_of(key)) != 0
        }

    def num_boxes(self, targets: PackedTargets) -> Tensor | float:
        """Divisor of the box and mask terms (see ``CriterionConfig.normalization``)."""
        config = self.config
        if config.normalization == "none":
            return 1.0
        count = targets.num_visible_objects if config.normalize_by_valid_object_num else targets.num_objects
        if config.normalization == "global" and dist.is_available() and dist.is_initialized():
            total = torch.as_tensor(count, dtype=targets.boxes.dtype, device=targets.boxes.device).clone()
            dist.all_reduce(total)
            return (total / dist.get_world_size()).clamp(min=1)
        if isinstance(count, Tensor):
            return count.to(targets.boxes.dtype).clamp(min=1)
        return float(max(count, 1))

    def _layer_terms(
        self, queries: QuerySet, matchings: list[Matching], targets: PackedTargets, num_boxes: Tensor | float
    ) -> dict[str, Tensor]:
        config = self.config
        logits = queries.logits
        num_layers = logits.shape[0]
        layer_idx = torch.cat([torch.full_like(m.batch_idx, layer) for layer, m in enumerate(matchings)])
        batch_idx = torch.cat([m.batch_idx for m in matchings])
        query_idx = torch.cat([m.query_idx for m in matchings])
        target_idx = torch.cat([m.target_idx for m in matchings])

        boxes = box_pair_losses(
            queries.boxes[layer_idx, batch_idx, query_idx],
            targets.boxes[target_idx],
            targets.boxes_xyxy[target_idx],
        )
        per_layer = logits.new_zeros(num_layers)
        terms = {
            "loss_bbox": per_layer.index_add(0, layer_idx, boxes.l1) / num_boxes,
            "loss_giou": per_layer.index_add(0, layer_idx, boxes.giou) / num_boxes,
        }

        positive = positive_map(tuple(logits.shape), layer_idx, batch_idx, query_idx)
        soft_target = iou_aware_soft_target(
            logits[layer_idx, batch_idx, query_idx].sigmoid(), boxes.iou, config.alpha
        )
        supervised = (
            targets.has_visible_object if config.use_presence else torch.ones_like(targets.has_visible_object)
        )
        terms["loss_ce"] = iou_aware_bce(
            logits,
            positive,
            layer_idx,
            batch_idx,
            query_idx,
            soft_target,
            supervised,
            pos_weight=config.pos_weight,
            gamma=config.gamma,
            pad_n_queries=config.pad_n_queries,
            pad_scale_pos=config.pad_scale_pos,
        )
        terms["ce_f1"] = binary_f1(logits, positive)
        if config.use_presence and queries.presence is not None:
            present = targets.has_visible_object
            terms["presence_loss"] = presence_loss(
                queries.presence, present, config.presence_alpha, config.presence_gamma
            )
            terms["presence_dec_acc"] = presence_accuracy(queries.presence, present)
        return terms

    def _mask_terms(
        self,
        pred_masks: Tensor,
        matching: Matching,
        targets: PackedTargets,
        num_boxes: Tensor | float,
        name: str,
    ) -> tuple[Tensor, Tensor]:
        if targets.masks is None:  # the data has no masks: no mask loss
            zero = pred_masks.new_zeros(())
            return zero, zero
        valid = targets.is_valid_mask[matching.target_idx]
        batch_idx, query_idx, target_idx = (t[valid] for t in matching)
        selected = pred_masks[batch_idx, query_idx]
        if selected.dtype in (torch.float16, torch.bfloat16):
            selected = selected.float()
        if not bool(torch.isfinite(selected).all()):
            raise ValueError(f"outputs['{name}'] contains NaN or inf in a matched prediction")
        c = self.config
        focal, dice = mask_pair_losses(
            selected,
            targets.masks[target_idx],
            c.focal_alpha,
            c.focal_gamma,
            c.num_sample_points,
            c.oversample_ratio,
            c.importance_sample_ratio,
        )
        return focal.sum() / num_boxes, dice.sum() / num_boxes
