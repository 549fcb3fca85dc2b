"""The learning rates of the optimiser ``sam3tune train`` builds, against the recipe's.

The parameter groups are the trainer's (``sam3tune.train.param_groups.build_optimizer``), once with the
run's ``OptimConfig`` and once with the defaults (the recipe), on the same model: each group's learning
rate is compared with the recipe's rate for the very same parameters (layer decay and LoRA included).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sam3tune.doctor.flags import Flag, make_flag
from sam3tune.doctor.recipe_checks import differences
from sam3tune.model import Sam3ForTraining
from sam3tune.train.config import OptimConfig
from sam3tune.train.param_groups import build_optimizer, role_of

WARNING_RATIO = 3.0
"""A group whose learning rate is this many times above or below the recipe's is a warning..."""
ERROR_RATIO = 10.0
"""...and this many times, an error."""
_LEARNING_RATE_FIELDS = ("lr_transformer", "lr_vision", "lr_text", "lora_lr", "vision_layer_decay")


@dataclass(frozen=True)
class LearningRateGroup:
    """One AdamW parameter group: its name (as the train package names it), learning rate before the
    schedule, the recipe's rate for the same parameters, weight decay and parameter count."""

    name: str
    lr: float
    recipe_lr: float
    weight_decay: float
    parameters: int

    @property
    def ratio(self) -> float:
        """``lr / recipe_lr`` (1 when both are 0)."""
        if self.recipe_lr == 0:
            return 1.0 if self.lr == 0 else math.inf
        return self.lr / self.recipe_lr

    @property
    def off_by(self) -> float:
        """How many times the rate is above or below the recipe's (1 = equal, inf = one of them is 0)."""
        ratio = self.ratio
        return math.inf if ratio in (0.0, math.inf) else max(ratio, 1 / ratio)


def param_groups(model: Sam3ForTraining, optim: OptimConfig) -> list[dict]:
    """The AdamW parameter groups of ``model`` under ``optim``: the trainer's optimiser's."""
    return build_optimizer(model, role_of, model.num_vit_blocks, optim).param_groups


def learning_rate_groups(model: Sam3ForTraining, optim: OptimConfig) -> list[LearningRateGroup]:
    """Each parameter group under ``optim`` next to the recipe's learning rate for it (``ValueError`` when
    nothing is trainable)."""
    recipe = {g["name"]: g["lr"] for g in param_groups(model, OptimConfig())}
    return [
        LearningRateGroup(
            name=g["name"],
            lr=g["lr"],
            recipe_lr=recipe[g["name"]],
            weight_decay=g["weight_decay"],
            parameters=sum(p.numel() for p in g["params"]),
        )
        for g in param_groups(model, optim)
    ]


def learning_rate_flags(groups: list[LearningRateGroup]) -> list[Flag]:
    """``learning_rate_far_from_recipe`` (warning from 3x off, error from 10x) listing the groups."""
    far = [g for g in groups if g.off_by >= WARNING_RATIO]
    if not far:
        return []
    worst = max(far, key=lambda g: g.off_by)
    return [
        make_flag(
            "learning_rate_far_from_recipe",
            f"{len(far)} of {len(groups)} parameter groups are {WARNING_RATIO:g}x or more off the recipe; "
            f"worst {worst.name}: lr {worst.lr:.3g} vs recipe {worst.recipe_lr:.3g}",
            severity="error" if worst.off_by >= ERROR_RATIO else "warning",
            details=[f"{g.name}: {g.lr:.3g} (recipe {g.recipe_lr:.3g}, x{g.ratio:.3g})" for g in far],
        )
    ]


def optimiser_flags(optim: OptimConfig) -> list[Flag]:
    """``optimiser_differs_from_recipe`` for settings other than learning rates (weight decay, clipping,
    betas, eps, LoRA weight decay) that differ from the defaults."""
    changed = [
        line
        for line in differences(optim, OptimConfig(), "optim")
        if line.split(":", 1)[0].removeprefix("optim.") not in _LEARNING_RATE_FIELDS
    ]
    if not changed:
        return []
    return [make_flag("optimiser_differs_from_recipe", "; ".join(changed), details=changed)]
