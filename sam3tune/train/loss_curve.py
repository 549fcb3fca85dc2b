"""The loss-curve figure of a run: the total training loss and each loss component against the
optimizer step, with the validation loss where it was measured, and the validation metric against the
zero-shot value of step 0 (the starting model)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

# The final-layer, one-to-one components of the official criterion, in the order they are drawn.
CURVE_COMPONENTS = ("loss_ce", "presence_loss", "loss_bbox", "loss_giou", "loss_mask", "loss_dice")
_METRIC_PANEL = "validation metric"


def running_mean(values: Sequence[float], window: int | None = None) -> list[float]:
    """Trailing mean over ``window`` steps (default: 1/20 of the run, at least 1): single steps are
    noisy (an image without objects has no box loss), the trend is what a person reads."""
    window = window or max(1, len(values) // 20)
    sums = [0.0, *itertools.accumulate(values)]
    return [(sums[i + 1] - sums[max(0, i + 1 - window)]) / min(i + 1, window) for i in range(len(values))]


def plot_loss_curve(records: list[dict[str, Any]], path: Path, metric: str | None = None) -> Path:
    """Draw ``loss`` and every component of :data:`CURVE_COMPONENTS` present in the ``train`` records
    (one panel each; ``val`` records add the validation loss to the total's panel) into a PNG. With
    ``metric`` (e.g. ``bbox_AP``) measured by ``val`` records, a last panel draws it per validation with
    the zero-shot value (the step-0 record) as a dashed line."""
    train = [r for r in records if r["kind"] == "train"]
    val = [r for r in records if r["kind"] == "val" and r.get("loss") is not None]
    keys = ["loss"] + [k for k in CURVE_COMPONENTS if any(r.get(k) is not None for r in train)]
    measured = [r for r in records if r["kind"] == "val" and r.get(metric) is not None] if metric else []
    if measured:
        keys.append(_METRIC_PANEL)
    columns = min(len(keys), 4)
    rows = -(-len(keys) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.2 * rows), squeeze=False)
    for axis, key in zip(axes.flat, keys, strict=False):
        if key == _METRIC_PANEL:
            _plot_metric(axis, measured, str(metric))
            continue
        points = [(r["step"], r[key]) for r in train if r.get(key) is not None]
        if points:
            steps, values = zip(*points, strict=True)
            axis.plot(steps, values, linewidth=0.6, alpha=0.35, color="C0", label="train (per step)")
            axis.plot(steps, running_mean(values), linewidth=1.6, color="C0", label="train (running mean)")
        if key == "loss" and val:
            axis.plot(
                [r["step"] for r in val], [r["loss"] for r in val], "o-", color="C1", label="validation"
            )
        if key == "loss":
            axis.legend(fontsize="small")
        axis.set_title("total loss" if key == "loss" else key)
        axis.set_xlabel("optimizer step")
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[len(keys) :]:
        axis.set_visible(False)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return Path(path)


def _plot_metric(axis, records: list[dict[str, Any]], metric: str) -> None:
    """The validation ``metric`` against the step, with the step-0 (zero-shot) value as a dashed line."""
    steps, values = [r["step"] for r in records], [r[metric] for r in records]
    axis.plot(steps, values, "o-", color="C1", label="validation")
    zero_shot = [r[metric] for r in records if r["step"] == 0]
    if zero_shot:
        axis.axhline(zero_shot[0], linestyle="--", color="C7", label=f"zero-shot {zero_shot[0]:.3g}")
    axis.legend(fontsize="small")
    axis.set_title(f"validation {metric}")
    axis.set_xlabel("optimizer step")
    axis.grid(alpha=0.3)
