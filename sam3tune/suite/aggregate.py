"""A suite's table: per dataset the zero-shot figure and the tuned mean and spread over seeds, then the
suite as a whole, beside published reference figures when given.

- Per dataset: ``tuned.mean`` over the seeds whose evaluation finished; ``tuned.std`` is the sample
  standard deviation over them (n - 1 in the denominator; null for one seed), with ``min``, ``max``, ``n``.
- Suite: ``zero_shot`` and ``tuned.mean`` are the means over datasets (of the dataset means: each dataset
  weighs the same, as the published ODinW13 and RF100-VL averages do); ``tuned.std`` is the spread over
  seeds of the suite mean: for each seed finished on every dataset, the mean over datasets, then their
  sample standard deviation. ``complete`` says whether every (dataset, seed) finished.

Values are in [0, 1] as in ``eval.json``; the Markdown table shows percentages.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from sam3tune.suite.reference import Reference


@dataclass
class DatasetResult:
    """The finished evaluations of one dataset: ``zero_shot`` and ``tuned`` (seed -> value) of the suite's
    metric (None where the report has no such value), ``failed`` (``"zero-shot"`` or the seed -> why that
    step failed)."""

    name: str
    zero_shot: float | None
    tuned: dict[int, float | None]
    failed: dict[str, str] = field(default_factory=dict)


def spread(values: list[float]) -> dict[str, Any]:
    """Mean, sample standard deviation (null for fewer than 2 values), min, max and count of ``values``."""
    if not values:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else None
    return {"mean": mean, "std": std, "min": min(values), "max": max(values), "n": len(values)}


def summarise(
    results: list[DatasetResult], seeds: list[int], metric: str, shots: int, reference: Reference | None
) -> dict[str, Any]:
    """The suite's results as one JSON-ready dict (``results.json``; see the module docstring)."""
    rows = []
    for result in results:
        values = {s: v for s, v in result.tuned.items() if v is not None}
        tuned = spread([values[s] for s in seeds if s in values])
        change = (
            None if tuned["mean"] is None or result.zero_shot is None else tuned["mean"] - result.zero_shot
        )
        rows.append(
            {
                "name": result.name,
                "zero_shot": result.zero_shot,
                "tuned": {**tuned, "per_seed": {str(s): values.get(s) for s in seeds}},
                "change": change,
                "missing_seeds": [s for s in seeds if s not in values],
                "failed": dict(result.failed),
                "reference": reference.for_dataset(result.name) if reference else None,
            }
        )
    zero = [r["zero_shot"] for r in rows if r["zero_shot"] is not None]
    means = [r["tuned"]["mean"] for r in rows if r["tuned"]["mean"] is not None]
    per_seed = [
        sum(r["tuned"]["per_seed"][str(s)] for r in rows) / len(rows)
        for s in seeds
        if all(r["tuned"]["per_seed"][str(s)] is not None for r in rows)
    ]
    seed_spread = spread(per_seed)
    complete = all(not r["missing_seeds"] for r in rows) and len(zero) == len(rows)
    suite = {
        "zero_shot": sum(zero) / len(zero) if zero else None,
        "tuned": {
            "mean": sum(means) / len(means) if means else None,
            "std": seed_spread["std"],
            "seeds_on_every_dataset": seed_spread["n"],
        },
        "datasets": len(rows),
        "complete": complete,
        "reference": reference.suite_figures() if reference else None,
    }
    if suite["zero_shot"] is not None and suite["tuned"]["mean"] is not None:
        suite["change"] = suite["tuned"]["mean"] - suite["zero_shot"]
    notes = []
    if reference is not None:
        notes += reference.mismatches(metric, shots, [r["name"] for r in rows])
    return {
        "metric": metric,
        "shots": shots,
        "seeds": seeds,
        "datasets": rows,
        "suite": suite,
        "notes": notes,
    }


def markdown_table(summary: dict[str, Any]) -> str:
    """The table of :func:`summarise` in Markdown, percentages with one decimal."""
    metric, shots, seeds = summary["metric"], summary["shots"], summary["seeds"]
    suite = summary["suite"]
    reference = suite["reference"]
    header = ["dataset", "zero-shot", f"{shots}-shot tuned (mean ± std over seeds)", "change", "seeds"]
    if reference:
        header += [f"published 0-shot ({reference['label']})", f"published {shots}-shot"]
    lines = [
        f"{metric} (percent) on each dataset's test split; seeds {', '.join(map(str, seeds))}",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
    ]
    for row in summary["datasets"]:
        tuned = row["tuned"]
        cells = [
            row["name"],
            _pct(row["zero_shot"]),
            _mean_std(tuned["mean"], tuned["std"]),
            _signed(row["change"]),
            f"{tuned['n']}/{len(seeds)}"
            + (" (failed: " + ", ".join(row["failed"]) + ")" if row["failed"] else ""),
        ]
        if reference:
            ref = row["reference"] or {}
            cells += [_pct(ref.get("zero_shot")), _pct(ref.get("tuned"))]
        lines.append("| " + " | ".join(cells) + " |")
    cells = [
        f"**suite mean ({suite['datasets']} datasets)**",
        f"**{_pct(suite['zero_shot'])}**",
        f"**{_mean_std(suite['tuned']['mean'], suite['tuned']['std'])}**",
        f"**{_signed(suite.get('change'))}**",
        "complete" if suite["complete"] else "incomplete",
    ]
    if reference:
        cells += [_pct(reference["zero_shot"]), _pct(reference["tuned"])]
    lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        "The suite's ± is the standard deviation over seeds of the mean over datasets "
        f"({suite['tuned']['seeds_on_every_dataset']} seed(s) finished on every dataset); a dataset's ± is "
        "over its seeds (sample standard deviation)."
    )
    if reference:
        lines.append(f"Published figures: {reference['cite']}.")
    lines += [f"Note: {note}" for note in summary["notes"]]
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _signed(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:+.1f}"


def _mean_std(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "-"
    return f"{100 * mean:.1f}" + ("" if std is None else f" ± {100 * std:.1f}")
