"""TEST-ONLY: sam3tune's forward and Meta's compared stage by stage, to name where they first diverge.

The stages in forward order, each in one layout for both models (batch of one image and one prompt):

=============  ==========================================================================
``vit``        ViT output (1, C, H, W)
``fpn_0..2``   the FPN levels SAM 3 uses (1, d, h, w), finest first
``positions``  sine position encoding of the coarsest used level (1, d, H, W)
``text``       text features of the valid prompt tokens (n, d)
``prompt``     the DETR prompt: valid text tokens, then the geometry tokens (n', d)
``encoder``    DETR encoder output (1, H*W, d)
``decoder``    every decoder layer's query states after the output norm (layers, 1, Q, d)
``logits``     final scores (1, Q); ``boxes`` (1, Q, 4) cxcywh; ``presence`` (1, 1); ``masks`` (1, Q, h, w)
=============  ==========================================================================

:func:`compare_stages` gives each stage's largest absolute difference and its size relative to the
reference's largest value; :func:`first_divergence` names the first stage whose relative difference
passes a bound (or whose shape differs: a missing prompt token shows there).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from sam3tune.model import Sam3ForTraining

STAGES = (
    "vit",
    "fpn_0",
    "fpn_1",
    "fpn_2",
    "positions",
    "text",
    "prompt",
    "encoder",
    "decoder",
    "logits",
    "boxes",
    "presence",
    "masks",
)


def sam3tune_stages(
    model: Sam3ForTraining, pixel_values: Tensor, input_ids: Tensor, attention_mask: Tensor
) -> dict[str, Tensor]:
    """Every stage of sam3tune's eval forward for one image (1, 3, S, S) and one prompt (1, L)."""
    core = model.core
    captured: dict[str, list] = {"vit": [], "prompt": [], "encoder": [], "decoder": []}
    last_encoder_layer = core.detr_encoder.layers[-1]
    hooks = [
        core.vision_encoder.backbone.register_forward_hook(
            lambda m, a, out: captured["vit"].append(out.last_hidden_state)
        ),
        core.detr_encoder.layers[0].register_forward_pre_hook(
            lambda m, args: captured["prompt"].append(args[1])
        ),
        last_encoder_layer.register_forward_hook(lambda m, a, out: captured["encoder"].append(out)),
        core.detr_decoder.output_layer_norm.register_forward_hook(
            lambda m, a, out: captured["decoder"].append(out)
        ),
    ]
    try:
        with torch.no_grad():
            images = model.encode_images(pixel_values)
            text = model.encode_text(input_ids, attention_mask)
            outputs = model.decode(images, torch.zeros(1, dtype=torch.long), text, attention_mask)
    finally:
        for hook in hooks:
            hook.remove()
    vit = captured["vit"][0]
    if vit.dim() == 3:  # (1, H*W, C)
        side = round(vit.shape[1] ** 0.5)
        vit = vit.reshape(1, side, side, -1)
    valid = attention_mask[0].bool()
    extra = captured["prompt"][0].shape[1] - attention_mask.shape[1]  # geometry tokens (all valid here)
    prompt_valid = torch.cat([valid, valid.new_ones(extra)])
    return {
        "vit": vit.permute(0, 3, 1, 2),
        **{f"fpn_{k}": level for k, level in enumerate(images.levels)},
        "positions": images.positions,
        "text": text[0][valid],
        "prompt": captured["prompt"][0][0][prompt_valid],
        "encoder": captured["encoder"][0],
        "decoder": torch.stack(captured["decoder"]),
        "logits": outputs["pred_logits"],
        "boxes": outputs["pred_boxes"],
        "presence": outputs["presence_logits"],
        "masks": outputs["pred_masks"],
    }


def meta_outputs_as_stages(outputs: dict, stages: dict) -> dict[str, Tensor]:
    """``tests.model.meta_sam3.meta_predict``'s outputs and stages under the names of :data:`STAGES`."""
    return {
        **stages,
        "logits": outputs["pred_logits"],
        "boxes": outputs["pred_boxes"],
        "presence": outputs["presence_logit_dec"],
        "masks": outputs["pred_masks"],
    }


@dataclass(frozen=True)
class StageDifference:
    name: str
    max_abs: float  # largest |ours - reference|; inf when the shapes differ
    scale: float  # largest |reference|
    shapes: tuple[tuple[int, ...], tuple[int, ...]]

    @property
    def relative(self) -> float:
        return self.max_abs / max(self.scale, 1e-12)

    def __str__(self) -> str:
        if self.max_abs == float("inf"):
            return f"{self.name:<10} shapes differ: ours {self.shapes[0]}, reference {self.shapes[1]}"
        return (
            f"{self.name:<10} max |diff| {self.max_abs:.3g} "
            f"(reference max {self.scale:.3g}, relative {self.relative:.2g})"
        )


def compare_stages(ours: dict[str, Tensor], reference: dict[str, Tensor]) -> list[StageDifference]:
    """The difference at every stage of :data:`STAGES` present in both, in forward order."""
    differences = []
    for name in STAGES:
        if name not in ours or name not in reference:
            continue
        a, b = ours[name].detach().float(), reference[name].detach().float()
        shapes = (tuple(a.shape), tuple(b.shape))
        scale = float(b.abs().max()) if b.numel() else 0.0
        max_abs = float((a - b).abs().max()) if a.shape == b.shape and a.numel() else float("inf")
        if a.shape == b.shape and not a.numel():
            max_abs = 0.0
        differences.append(StageDifference(name, max_abs, scale, shapes))
    return differences


def first_divergence(differences: list[StageDifference], relative: float = 1e-4) -> StageDifference | None:
    """The first stage whose difference exceeds ``relative`` times the reference's largest value."""
    return next((d for d in differences if d.relative > relative), None)


def report(differences: list[StageDifference], relative: float = 1e-4) -> str:
    """One line per stage, then the first diverging one (or that none does)."""
    first = first_divergence(differences, relative)
    verdict = f"first diverging stage: {first.name}" if first else f"no stage diverges beyond {relative:g}"
    return "\n".join([*(str(d) for d in differences), verdict])
