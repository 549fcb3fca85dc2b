"""The learning-rate schedule of the official SAM 3 fine-tuning recipe: inverse square root with
linear warm-up and linear cool-down.

For the optimizer step with 0-based index ``s`` out of ``T`` steps in the run, the learning rate of a
parameter group is ``base_lr * factor(s)`` with

    factor(s) = decay(s) * warmup(s) * cooldown(s)
    decay(s)    = 1                                  if s <= W
                  1 / sqrt((s - W + timescale) / timescale)   otherwise
    warmup(s)   = min(1, s / W)                      (1 when W = 0)
    cooldown(s) = min(1, (T - s) / C)                (1 when C = 0)

where ``W`` is the number of warm-up steps and ``C`` the number of cool-down steps. The factor rises
linearly from 0 at step 0 to 1 at step W, then decays as 1/sqrt of the steps since warm-up measured
in units of ``timescale``, and falls linearly over the last C steps (reaching 1/C of its value at the
last step, never 0). This is the definition of Meta's ``InverseSquareRootParamScheduler`` called with
the global step index before each optimizer step. (Meta's version evaluates the cool-down at step 0
with T taken as 1, which changes step 0 only when W = 0; here T is always the real total.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class InverseSqrtSchedule:
    """The lr multiplier of each optimizer step of a run of ``total_steps`` steps."""

    warmup_steps: int
    cooldown_steps: int
    timescale: int
    total_steps: int

    def __post_init__(self) -> None:
        if self.warmup_steps < 0 or self.cooldown_steps < 0:
            raise ValueError(
                f"warm-up and cool-down steps must be >= 0, got {self.warmup_steps} and {self.cooldown_steps}"
            )
        if self.timescale <= 0:
            raise ValueError(f"timescale must be > 0, got {self.timescale}")
        if self.total_steps <= 0:
            raise ValueError(f"total_steps must be > 0, got {self.total_steps}")

    def factor(self, step: int) -> float:
        """The multiplier of the base learning rate at 0-based optimizer step ``step``."""
        factor = 1.0
        if step > self.warmup_steps:
            factor /= math.sqrt((step - self.warmup_steps + self.timescale) / self.timescale)
        if self.warmup_steps:
            factor *= min(1.0, step / self.warmup_steps)
        if self.cooldown_steps:
            factor *= min(1.0, (self.total_steps - step) / self.cooldown_steps)
        return factor
