"""Model outputs, checked and stacked over decoder layers so that every loss term runs once for all layers.

Input (the model -> loss interface), a dict for the final decoder layer:
``pred_logits`` ``(B, Q)``, ``pred_boxes`` ``(B, Q, 4)`` cxcywh in [0, 1], optional ``presence_logits``
``(B, 1)``, optional ``pred_masks`` ``(B, Q, h, w)`` mask logits; ``aux_outputs``: a list of dicts of the
earlier layers (earliest first, same keys, masks ignored); the one-to-many (DAC) query set as
``pred_logits_o2m``, ``pred_boxes_o2m`` in every layer and ``pred_masks_o2m`` in the final one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class QuerySet:
    """One query set (one-to-one or one-to-many) of all ``L`` decoder layers, the final layer last."""

    logits: Tensor  # (L, B, Q)
    boxes: Tensor  # (L, B, Q, 4) cxcywh
    presence: Tensor | None  # (L, B) presence logits, one-to-one set only
    masks: Tensor | None  # (B, Q, h, w) mask logits of the final layer


@dataclass(frozen=True)
class DecoderPredictions:
    one_to_one: QuerySet
    one_to_many: QuerySet | None

    @property
    def num_layers(self) -> int:
        return int(self.one_to_one.logits.shape[0])


def parse_outputs(outputs: Mapping[str, object], batch_size: int) -> DecoderPredictions:
    """Check ``outputs`` against ``batch_size`` queries and stack them over layers.

    Raises ``ValueError`` saying which entry is wrong, what was expected and what came.
    """
    if not isinstance(outputs, Mapping):
        raise ValueError(f"outputs must be a dict, got {type(outputs).__name__}")
    aux = outputs.get("aux_outputs") or []
    if not isinstance(aux, (list, tuple)) or not all(isinstance(a, Mapping) for a in aux):
        raise ValueError("outputs['aux_outputs'] must be a list of dicts (earliest decoder layer first)")
    layers = [*aux, outputs]
    names = [f"outputs['aux_outputs'][{i}]" for i in range(len(aux))] + ["outputs"]

    has_o2m = ["pred_logits_o2m" in layer for layer in layers]
    if any(has_o2m) and not all(has_o2m):
        raise ValueError(
            "the one-to-many outputs (pred_logits_o2m) must be in every decoder layer or in none; "
            f"present in {[n for n, h in zip(names, has_o2m, strict=True) if h]}"
        )
    one_to_one = _query_set(layers, names, "", batch_size)
    one_to_many = _query_set(layers, names, "_o2m", batch_size) if all(has_o2m) else None

    tensors = [one_to_one.logits, one_to_one.boxes]
    if one_to_one.presence is not None:
        tensors.append(one_to_one.presence)
    if one_to_many is not None:
        tensors += [one_to_many.logits, one_to_many.boxes]
    if not bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all()):  # one host sync
        _raise_non_finite(layers, names)
    return DecoderPredictions(one_to_one, one_to_many)


def _query_set(layers: list[Mapping], names: list[str], suffix: str, batch_size: int) -> QuerySet:
    logits, boxes, presence = [], [], []
    for layer, name in zip(layers, names, strict=True):
        x = _tensor(layer, f"pred_logits{suffix}", name)
        if x.dim() != 2 or x.shape[0] != batch_size:
            hint = ": squeeze the last dimension" if x.dim() == 3 and x.shape[-1] == 1 else ""
            raise ValueError(
                f"{name}['pred_logits{suffix}'] must have shape (B, Q) with B = {batch_size} queries "
                f"(len(targets)), got {tuple(x.shape)}{hint}"
            )
        if logits and x.shape != logits[0].shape:
            raise ValueError(
                f"{name}['pred_logits{suffix}'] has shape {tuple(x.shape)} but the earlier layers have "
                f"{tuple(logits[0].shape)}"
            )
        box = _tensor(layer, f"pred_boxes{suffix}", name)
        if box.shape != (*x.shape, 4):
            raise ValueError(
                f"{name}['pred_boxes{suffix}'] must have shape {(*x.shape, 4)} (B, Q, 4) cxcywh, "
                f"got {tuple(box.shape)}"
            )
        logits.append(x)
        boxes.append(box)
        if not suffix and "presence_logits" in layer:
            z = _tensor(layer, "presence_logits", name)
            if z.shape != (batch_size, 1):
                raise ValueError(
                    f"{name}['presence_logits'] must have shape ({batch_size}, 1), got {tuple(z.shape)}"
                )
            presence.append(z[:, 0])
    if presence and len(presence) != len(layers):
        raise ValueError("presence_logits must be in every decoder layer's outputs or in none")

    masks = layers[-1].get(f"pred_masks{suffix}")
    if masks is not None:
        if not isinstance(masks, Tensor) or masks.dim() != 4 or masks.shape[:2] != logits[0].shape:
            got = tuple(masks.shape) if isinstance(masks, Tensor) else type(masks).__name__
            raise ValueError(
                f"outputs['pred_masks{suffix}'] must have shape (B, Q, h, w) with (B, Q) = "
                f"{tuple(logits[0].shape)}, got {got}"
            )
        if not masks.is_floating_point():
            raise ValueError(f"outputs['pred_masks{suffix}'] must hold float logits, got {masks.dtype}")
    dtypes = {t.dtype for t in logits + boxes + presence}
    if len(dtypes) > 1:
        raise ValueError(f"pred_logits, pred_boxes and presence_logits must share one dtype, got {dtypes}")
    return QuerySet(
        logits=_at_least_float32(torch.stack(logits)),
        boxes=_at_least_float32(torch.stack(boxes)),
        presence=_at_least_float32(torch.stack(presence)) if presence else None,
        masks=masks,
    )


def _at_least_float32(x: Tensor) -> Tensor:
    """Half / bfloat16 predictions (autocast) are upcast: the loss is computed in float32 or better."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _tensor(layer: Mapping, key: str, name: str) -> Tensor:
    value = layer.get(key)
    if not isinstance(value, Tensor):
        got = "nothing" if value is None else type(value).__name__
        raise ValueError(f"{name}['{key}'] must be a tensor, got {got}")
    if not value.is_floating_point():
        raise ValueError(f"{name}['{key}'] must be floating point, got {value.dtype}")
    return value


def _raise_non_finite(layers: list[Mapping], names: list[str]) -> None:
    for layer, name in zip(layers, names, strict=True):
        for key in ("pred_logits", "pred_boxes", "presence_logits", "pred_logits_o2m", "pred_boxes_o2m"):
            value = layer.get(key)
            if isinstance(value, Tensor) and not bool(torch.isfinite(value).all()):
                raise ValueError(f"{name}['{key}'] contains NaN or inf")
    raise AssertionError("unreachable: a non-finite value was detected but not located")


def select_queries(outputs: Mapping[str, object], rows: Tensor) -> dict[str, object]:
    """The outputs of the queries ``rows`` ``(K,)`` int64 (every tensor indexed on its first, query
    dimension, in every decoder layer): what the criterion sees of a batch some of whose queries it does
    not supervise."""
    selected: dict[str, object] = {}
    for key, value in outputs.items():
        if key == "aux_outputs":
            selected[key] = [select_queries(layer, rows) for layer in value]
        elif isinstance(value, Tensor):
            selected[key] = value.index_select(0, rows.to(value.device))
        else:
            selected[key] = value
    return selected
