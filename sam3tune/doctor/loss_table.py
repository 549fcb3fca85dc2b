"""Every term of one criterion result: raw value, weight, weighted contribution and share of the total.

Weights and the batch scale come from the criterion itself (``Sam3Criterion.weight_of``, ``loss_scale``,
``contributions``), the one place where weighting happens; this module only arranges them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from torch import Tensor

from sam3tune.doctor.flags import Flag, make_flag
from sam3tune.loss import Sam3Criterion, split_key

GROUPS = ("final", "auxiliary", "one_to_many")
"""Final decoder layer (one-to-one queries), earlier decoder layers (one-to-one), one-to-many branch."""
TERM_ORDER = ("loss_ce", "presence_loss", "loss_bbox", "loss_giou", "loss_mask", "loss_dice", "ce_f1")
DOMINANT_SHARE = 0.9
"""Share of the total above which one term family is flagged as dominating."""


@dataclass(frozen=True)
class LossTerm:
    """One key of the criterion result. ``weight`` is ``criterion.weight_of(key)`` (0: logged only);
    ``contribution = scale * weight * raw`` and ``share = contribution / total``."""

    key: str
    term: str
    group: str
    layer: int | None
    raw: float
    weight: float
    contribution: float
    share: float


@dataclass(frozen=True)
class LossTable:
    """The terms of one batch (``total`` = the criterion's ``loss``; ``scale`` multiplies the weighted sum:
    ``sqrt(num_queries)`` in the recipe)."""

    terms: tuple[LossTerm, ...]
    total: float
    scale: float
    num_queries: int

    def group_totals(self) -> dict[str, float]:
        """Contribution of each group (``GROUPS``); they add up to ``total``."""
        return {g: sum(t.contribution for t in self.terms if t.group == g) for g in GROUPS}

    def term_totals(self) -> dict[str, float]:
        """Contribution of each weighted term family (e.g. ``loss_ce`` over all layers and both branches)."""
        totals: dict[str, float] = {}
        for t in self.terms:
            if t.weight:
                totals[t.term] = totals.get(t.term, 0.0) + t.contribution
        return totals


def _group(key: str) -> tuple[str, int | None, str]:
    parts = split_key(key)
    group = "one_to_many" if parts.one_to_many else "final" if parts.layer is None else "auxiliary"
    return group, parts.layer, parts.term


def loss_table(criterion: Sam3Criterion, result: Mapping[str, Tensor], num_queries: int) -> LossTable:
    """Arrange ``result`` (``criterion(outputs, targets)`` on ``num_queries`` queries) as a table."""
    total = float(result["loss"].detach())
    contributions = criterion.contributions(result, num_queries)
    terms = []
    for key, value in result.items():
        if key == "loss":
            continue
        group, layer, term = _group(key)
        contribution = contributions.get(key, 0.0)
        terms.append(
            LossTerm(
                key=key,
                term=term,
                group=group,
                layer=layer,
                raw=float(value.detach()),
                weight=criterion.weight_of(key),
                contribution=contribution,
                share=contribution / total if total and math.isfinite(total) else 0.0,
            )
        )
    order = {t: i for i, t in enumerate(TERM_ORDER)}

    def position(t: LossTerm) -> tuple:
        layer = math.inf if t.layer is None else t.layer  # aux layers first (earliest first), final last
        return (GROUPS.index(t.group), layer, order.get(t.term, len(order)), t.key)

    return LossTable(
        tuple(sorted(terms, key=position)), total, criterion.loss_scale(num_queries), num_queries
    )


def loss_flags(table: LossTable) -> list[Flag]:
    """``loss_not_finite`` and ``term_dominates`` for one table."""
    if not math.isfinite(table.total):
        bad = [t.key for t in table.terms if not math.isfinite(t.raw)]
        return [
            make_flag(
                "loss_not_finite", f"total = {table.total}; non-finite terms: {', '.join(bad) or 'none'}"
            )
        ]
    flags = []
    for term, contribution in table.term_totals().items():
        share = contribution / table.total if table.total else 0.0
        if share > DOMINANT_SHARE:
            flags.append(
                make_flag(
                    "term_dominates",
                    f"{term} (all layers and branches) is {share:.1%} of the total "
                    f"({contribution:.4g} of {table.total:.4g})",
                )
            )
    return flags
