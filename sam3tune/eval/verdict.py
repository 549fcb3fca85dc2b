"""Did fine-tuning beat zero-shot? One metric of the tuned model against the starting model, as a verdict.

The verdict is two-sided when the untuned (retention) prompts were measured
(:mod:`sam3tune.eval.retention`): better on the tuned prompts by how much, *and* what share of the
starting model's answers to the untuned prompts the tuned model kept (:class:`Retained`).

Two sources give the same verdict:

* a training run's validation records (``metrics.jsonl``): with validation on, the loop evaluates the
  starting model before its first step and logs it as the ``val`` record of step 0; every later ``val``
  record measures trained weights (:func:`verdict_from_records`, printed by ``sam3tune train``);
* an evaluation with ``baseline=`` set to the starting model (:func:`verdict_from_metrics`, in
  ``eval.md``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sam3tune.eval.evaluate import EvalMetrics

Mode = Literal["min", "max"]

RETENTION_METRIC = "retention_bbox_AP"
"""Box AP of the answers to the untuned prompts against the starting model's (100 for that model)."""
TRUE_RETENTION_METRIC = "retention_true_bbox_AP50"
"""Box AP50 of the untuned prompts against their labels (``retention.data``)."""


@dataclass(frozen=True)
class Retained:
    """The other side of the verdict: ``tuned`` / ``zero_shot`` values of :data:`RETENTION_METRIC` (the
    starting model's is 1 by construction, measured all the same) and, with labelled retention data, of
    :data:`TRUE_RETENTION_METRIC`."""

    zero_shot: float
    tuned: float
    true_zero_shot: float | None = None
    true_tuned: float | None = None

    @property
    def kept(self) -> float | None:
        """Share of the starting model's retention AP that the tuned model keeps."""
        return self.tuned / self.zero_shot if self.zero_shot > 0 else None

    @property
    def true_kept(self) -> float | None:
        """Share of the starting model's labelled AP50 on the untuned prompts that the tuned model keeps."""
        if self.true_zero_shot is None or self.true_tuned is None or self.true_zero_shot <= 0:
            return None
        return self.true_tuned / self.true_zero_shot

    def text(self) -> str:
        """``untuned prompts: keeps 62% of the starting model's answers (retention box AP 0.6200 vs
        1.0000); labelled box AP50 0.4000 vs zero-shot 0.5500 (73% kept)``."""
        kept = f"keeps {self.kept:.0%} of" if self.kept is not None else "compared with"
        text = (
            f"untuned prompts: {kept} the starting model's answers (retention box AP {self.tuned:.4f} vs "
            f"{self.zero_shot:.4f})"
        )
        if self.true_zero_shot is not None and self.true_tuned is not None:
            share = f" ({self.true_kept:.0%} kept)" if self.true_kept is not None else ""
            text += f"; labelled box AP50 {self.true_tuned:.4f} vs zero-shot {self.true_zero_shot:.4f}{share}"
        return text


@dataclass(frozen=True)
class Verdict:
    """The tuned value of ``metric`` against the zero-shot one.

    ``change`` is ``tuned - zero_shot`` (signed; for a ``min`` metric such as a loss a negative change
    is an improvement); ``better`` says whether it moved in the metric's direction (a tie is not better).
    ``step`` and ``checkpoint``: where a training run reached the best value (None for an evaluation);
    ``retained``: the untuned prompts' side, when they were measured.
    """

    metric: str
    mode: Mode
    zero_shot: float
    tuned: float
    step: int | None = None
    checkpoint: Path | None = None
    retained: Retained | None = None

    @property
    def change(self) -> float:
        return self.tuned - self.zero_shot

    @property
    def better(self) -> bool:
        return self.change < 0 if self.mode == "min" else self.change > 0

    def line(self) -> str:
        """One line, e.g. ``zero-shot verdict: better: best validation bbox_AP 0.4120 (step 600) vs
        zero-shot 0.0310 (+0.3810, x13.3); best weights: runs/x/checkpoints/best``."""
        ratio = f", x{self.tuned / self.zero_shot:.3g}" if self.zero_shot > 0 and self.tuned >= 0 else ""
        what = f"best validation {self.metric}" if self.step is not None else f"tuned {self.metric}"
        at = f" (step {self.step})" if self.step is not None else ""
        text = (
            f"zero-shot verdict: {'better' if self.better else 'NOT better'}: {what} {self.tuned:.4f}{at} "
            f"vs zero-shot {self.zero_shot:.4f} ({self.change:+.4f}{ratio})"
        )
        if self.retained is not None:
            text += f"; {self.retained.text()}"
        if self.checkpoint is not None:
            text += f"; best weights: {self.checkpoint}"
        if not self.better:
            text += "; the starting model scores at least as well"
        return text


def verdict_from_records(
    records: list[dict[str, Any]], metric: str, mode: Mode = "max", checkpoint: Path | None = None
) -> Verdict | None:
    """The verdict of a training run from its metric records, or None when there is no step-0
    validation of ``metric`` (validation off, or a run from before zero-shot validation) or no later one.

    The tuned value is the best finite value after step 0; with ties the earliest (as the loop keeps
    the first best checkpoint). ``checkpoint``: where the run saved those weights.
    """
    values = [(r["step"], r[metric]) for r in records if r.get("kind") == "val" and _finite(r.get(metric))]
    zero_shot = [value for step, value in values if step == 0]
    trained = [(step, value) for step, value in values if step > 0]
    if not zero_shot or not trained:
        return None
    best = (min if mode == "min" else max)(value for _, value in trained)
    step = next(step for step, value in trained if value == best)
    val = {r["step"]: r for r in records if r.get("kind") == "val"}
    retained = _retained(val[0], val[step])
    return Verdict(metric, mode, zero_shot[-1], best, step, checkpoint, retained)


def verdict_from_metrics(
    tuned: EvalMetrics, zero_shot: EvalMetrics, metric: str = "bbox_AP", mode: Mode = "max"
) -> Verdict | None:
    """The verdict of an evaluation of the tuned model next to the starting model on the same split;
    ``metric`` is a key of :meth:`EvalMetrics.summary` (None when either value is undefined)."""
    after, before = tuned.summary().get(metric), zero_shot.summary().get(metric)
    if not (_finite(after) and _finite(before)):
        return None
    return Verdict(
        metric, mode, float(before), float(after), retained=_retained(zero_shot.summary(), tuned.summary())
    )


def _retained(zero_shot: dict[str, Any], tuned: dict[str, Any]) -> Retained | None:
    """The retention side from two summaries (or validation records), None when not measured."""
    before, after = zero_shot.get(RETENTION_METRIC), tuned.get(RETENTION_METRIC)
    if not (_finite(before) and _finite(after)):
        return None
    true_before, true_after = zero_shot.get(TRUE_RETENTION_METRIC), tuned.get(TRUE_RETENTION_METRIC)
    if not (_finite(true_before) and _finite(true_after)):
        true_before = true_after = None
    return Retained(float(before), float(after), true_before, true_after)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
