"""Published figures a suite's table is printed beside: the shipped ``odinw13`` and ``rf100vl`` files
(``sam3tune/suite/references/``) or any YAML file of the same form.

```yaml
name: ODinW13
metric: bbox_AP          # the suite metric the figures are (eval.json summary key)
shots: 10
datasets: [...]          # the datasets the published average is over
compare: arxiv-v1        # which of the sources the table shows
sources:
  arxiv-v1: {cite: "...", zero_shot: 61.0, tuned: 71.8}       # percent, as published
  conference: {cite: "...", zero_shot: 59.9, tuned: 71.6}
per_dataset: {}          # optional: name -> {zero_shot: ..., tuned: ...} (percent)
```
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sam3tune.config import ConfigError, parse_yaml

SHIPPED = Path(__file__).parent / "references"


@dataclass(frozen=True)
class Reference:
    """One reference file, its figures in [0, 1] (the files hold percentages, as published)."""

    name: str
    metric: str
    shots: int
    source: str
    cite: str
    zero_shot: float | None
    tuned: float | None
    datasets: tuple[str, ...] = ()
    per_dataset: dict[str, dict[str, float]] = field(default_factory=dict)

    def suite_figures(self) -> dict[str, Any]:
        """The suite-level figures with their label and citation."""
        return {
            "label": f"{self.name}, {self.source}",
            "cite": self.cite,
            "zero_shot": self.zero_shot,
            "tuned": self.tuned,
        }

    def for_dataset(self, name: str) -> dict[str, float] | None:
        return self.per_dataset.get(name)

    def mismatches(self, metric: str, shots: int, datasets: list[str]) -> list[str]:
        """Why the suite and the reference may not compare one to one."""
        notes = []
        if metric != self.metric:
            notes.append(f"the published figures are {self.metric}, this table shows {metric}")
        if shots != self.shots:
            notes.append(f"the published figures are {self.shots}-shot, this suite is {shots}-shot")
        if self.datasets and sorted(datasets) != sorted(self.datasets):
            notes.append(
                f"the published average is over {len(self.datasets)} datasets ({self.name}); this suite has "
                f"{len(datasets)}"
            )
        return notes


def load_reference(spec: str) -> Reference:
    """``spec``: a shipped name (``odinw13``, ``rf100vl``) or a YAML file path; ``name@source`` picks a
    source other than the file's ``compare``."""
    name, _, source = spec.partition("@")
    path = SHIPPED / f"{name}.yaml" if (SHIPPED / f"{name}.yaml").is_file() else Path(name)
    try:
        data = parse_yaml(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        shipped = ", ".join(sorted(p.stem for p in SHIPPED.glob("*.yaml")))
        raise ConfigError(
            f"reference={spec!r}: not a shipped reference ({shipped}) nor a readable YAML file ({err})"
        ) from err
    try:
        source = source or data["compare"]
        figures = data["sources"][source]
        return Reference(
            name=str(data["name"]),
            metric=str(data["metric"]),
            shots=int(data["shots"]),
            source=source,
            cite=str(figures["cite"]),
            zero_shot=_fraction(figures.get("zero_shot")),
            tuned=_fraction(figures.get("tuned")),
            datasets=tuple(data.get("datasets") or ()),
            per_dataset={
                k: {key: _fraction(v.get(key)) for key in ("zero_shot", "tuned")}
                for k, v in (data.get("per_dataset") or {}).items()
            },
        )
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise ConfigError(
            f"reference {path}: expected name, metric, shots, compare and "
            f"sources.<name>.cite/zero_shot/tuned (source {source!r}): {type(err).__name__} {err}"
        ) from err


def _fraction(percent: Any) -> float | None:
    return None if percent is None else float(percent) / 100
