"""Distillation from the starting model: the tuned model's final-layer answers to the retention prompts
are pulled towards the starting model's (``docs/train.md``, "Fine-tune without forgetting").

For the distilled queries (the same prompts on the same images, both models in step), per query:

- ``distill_logits``: the Bernoulli KL divergence from the teacher's proposal probabilities
  ``sigmoid(teacher logits)`` to the student's, summed over the Q proposals;
- ``distill_presence``: the same KL for the presence probability;
- ``distill_boxes``: the L1 distance of the cxcywh boxes of each proposal, weighted by the teacher's score
  ``sigmoid(logit) * sigmoid(presence)`` (where the teacher sees nothing, the box does not matter),
  summed over proposals;
- ``distill_masks``: on the proposals the teacher is confident about (score >= ``mask_score``), the KL
  of the mask pixel probabilities, averaged over pixels, summed over those proposals.

Each is averaged over the distilled queries; ``distill`` = ``weight`` x their sum is what the loop adds to
the official criterion's total (which is computed unchanged on the supervised queries). Proposals are
compared slot by slot: the student starts as a copy of the teacher, so its query slots keep their roles.
KL (not cross-entropy) makes every term 0 when the student answers exactly as the teacher does.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch.nn.functional as F
from torch import Tensor

TERMS = ("distill_logits", "distill_presence", "distill_boxes", "distill_masks")


def bernoulli_kl(target_logits: Tensor, logits: Tensor) -> Tensor:
    """Elementwise KL(Bernoulli(sigmoid(target_logits)) || Bernoulli(sigmoid(logits))): 0 where the logits
    are equal, > 0 elsewhere (up to rounding)."""
    p = target_logits.sigmoid()
    log_q, log_not_q = F.logsigmoid(logits), F.logsigmoid(-logits)
    return p * (F.logsigmoid(target_logits) - log_q) + (1 - p) * (F.logsigmoid(-target_logits) - log_not_q)


def distillation_terms(
    student: Mapping[str, Tensor], teacher: Mapping[str, Tensor], weight: float, mask_score: float = 0.5
) -> dict[str, Tensor]:
    """The distillation terms and their weighted sum ``distill`` for D queries answered by both models.

    ``student`` / ``teacher``: final-layer outputs of the same D queries (``pred_logits`` (D, Q),
    ``pred_boxes`` (D, Q, 4), ``presence_logits`` (D, 1), optionally ``pred_masks`` (D, Q, h, w) in both);
    the teacher's are targets (detached here).
    """
    t = {k: v.detach().float() for k, v in teacher.items() if isinstance(v, Tensor)}
    logits, boxes = student["pred_logits"].float(), student["pred_boxes"].float()
    presence = student["presence_logits"].float()
    queries = max(logits.shape[0], 1)
    score = t["pred_logits"].sigmoid() * t["presence_logits"].sigmoid()  # (D, Q)
    terms = {
        "distill_logits": bernoulli_kl(t["pred_logits"], logits).sum() / queries,
        "distill_presence": bernoulli_kl(t["presence_logits"], presence).sum() / queries,
        "distill_boxes": (score * (boxes - t["pred_boxes"]).abs().sum(-1)).sum() / queries,
    }
    masks, teacher_masks = student.get("pred_masks"), t.get("pred_masks")
    if masks is not None and teacher_masks is not None:
        confident = score >= mask_score
        kl = bernoulli_kl(teacher_masks[confident], masks[confident].float())
        terms["distill_masks"] = kl.flatten(1).mean(1).sum() / queries if kl.numel() else masks.sum() * 0.0
    else:
        terms["distill_masks"] = logits.sum() * 0.0
    terms["distill"] = weight * sum(terms[k] for k in TERMS)
    return terms
