"""What the first-batch loss should be: the recipe's loss of an *uninformed* model on the same batch.

An uninformed model has every output logit at 0: class and presence probability 0.5, every box
(0.5, 0.5, 0.5, 0.5) (sigmoid of 0), every mask pixel 0.5, and its one-to-many queries matched one per
target. Its loss is a closed-form function of the batch (``docs/doctor.md`` derives each term); here it is
evaluated by the criterion itself on such outputs, so the weighting cannot drift from the recipe's. A
freshly initialised model scores near it (random weights give logits near 0), a pretrained model lower;
far above it, something is scaled wrong.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from sam3tune.doctor.flags import Flag, make_flag
from sam3tune.doctor.loss_table import loss_table
from sam3tune.loss import CriterionConfig, LayerMatchings, Sam3Criterion

HIGH_FACTOR = 5.0
"""A total above ``HIGH_FACTOR`` x the recipe's uninformed total is an error."""
LOW_FACTOR = 1e-3
"""A total below ``LOW_FACTOR`` x the recipe's uninformed total is a warning (nothing left to learn?)."""


@dataclass(frozen=True)
class ExpectedTotal:
    """Reference totals for one batch.

    ``recipe``: the official recipe's criterion (``CriterionConfig()``) on uninformed outputs;
    ``configured``: this run's criterion on the same; ``recipe_terms``: the recipe total by term family;
    ``low`` / ``high``: the range the actual first-batch total should fall in.
    """

    recipe: float
    configured: float
    recipe_terms: dict[str, float]
    low: float
    high: float

    @property
    def order_of_magnitude(self) -> int:
        return math.floor(math.log10(self.recipe)) if self.recipe > 0 else 0


def uninformed_outputs(outputs: Mapping[str, Any]) -> dict[str, Any]:
    """``outputs`` (model format, ``docs/architecture.md``; meta tensors will do) with every logit 0 and every
    box at the centre (0.5, 0.5, 0.5, 0.5); same keys, shapes and dtypes, on the CPU, no gradient."""
    result: dict[str, Any] = {}
    for key, value in outputs.items():
        if key == "aux_outputs":
            result[key] = [uninformed_outputs(layer) for layer in value]
        elif isinstance(value, Tensor):
            fill = 0.5 if key.startswith("pred_boxes") else 0.0
            result[key] = torch.full(value.shape, fill, dtype=value.dtype)
        else:
            result[key] = value
    return result


def in_range_targets(targets: Sequence[Mapping[str, Tensor]]) -> list[dict[str, Tensor]]:
    """``targets`` with boxes forced into [0, 1] (NaN -> 0.5), so that a reference can be computed even for a
    batch whose boxes the criterion would refuse."""
    return [
        {**target, "boxes": torch.nan_to_num(target["boxes"].detach().float(), nan=0.5).clamp(0.0, 1.0)}
        for target in targets
    ]


def uninformed_loss(
    criterion: Sam3Criterion, outputs: Mapping[str, Any], targets: Sequence[Mapping[str, Tensor]]
) -> dict[str, Tensor]:
    """``criterion``'s result for :func:`uninformed_outputs` of ``outputs`` on ``targets``.

    Every prediction being equal, the one-to-many matcher (strictly above a quantile of equal scores)
    would match nothing, a degenerate tie; a real model matches one to four predictions per target there.
    The reference matches the one-to-many queries one per target in every layer, like the one-to-one
    queries (any one-to-one assignment gives the same values when all predictions are equal).
    """
    predictions, packed = criterion.prepare(uninformed_outputs(outputs), in_range_targets(targets))
    with torch.no_grad():
        one_to_one = criterion.match(predictions, packed).one_to_one
        twice = list(one_to_one) if predictions.one_to_many is not None else None
        return criterion.compute(predictions, packed, LayerMatchings(one_to_one, twice))


def expected_total(
    outputs: Mapping[str, Any], targets: Sequence[Mapping[str, Tensor]], config: CriterionConfig
) -> ExpectedTotal:
    """The uninformed-model totals of this batch under the recipe and under ``config``."""
    recipe = Sam3Criterion(CriterionConfig())
    recipe_result = uninformed_loss(recipe, outputs, targets)
    configured = float(uninformed_loss(Sam3Criterion(config), outputs, targets)["loss"])
    table = loss_table(recipe, recipe_result, len(targets))
    return ExpectedTotal(
        recipe=table.total,
        configured=configured,
        recipe_terms=table.term_totals(),
        low=LOW_FACTOR * table.total,
        high=HIGH_FACTOR * table.total,
    )


def total_flags(total: float, expected: ExpectedTotal) -> list[Flag]:
    """``total_out_of_range`` when ``total`` is outside ``[expected.low, expected.high]``."""
    if not math.isfinite(total) or expected.low <= total <= expected.high:
        return []
    ratio = total / expected.recipe
    severity = "error" if total > expected.high else "warning"
    return [
        make_flag(
            "total_out_of_range",
            f"first-batch total {total:.4g} is {ratio:.3g}x the recipe's uninformed-model total "
            f"{expected.recipe:.4g} for this batch (expected {expected.low:.3g} .. {expected.high:.4g})",
            severity=severity,
            fix=None
            if severity == "error"
            else "check that the targets reach the loss and that the loss weights are not 0",
        )
    ]
