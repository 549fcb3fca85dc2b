"""What ``sam3tune demo`` does, as one dataclass: the single home of the demo's defaults (the CLI reads
them from here without importing torch)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sam3tune.config import InvalidValue


@dataclass
class DemoSettings:
    """What ``run_demo`` does; the defaults are the measured demo (docs/demo.md)."""

    out: Path = Path("sam3tune-demo")
    steps: int = 600
    train_images: int = 500
    heldout_images: int = 200
    overlays: int = 6
    seed: int = 1
    base: Path | None = None  # default: the shipped base model
    finetune: dict[str, Any] = field(default_factory=dict)  # TrainConfig values (nested) of the fine-tune

    def __post_init__(self) -> None:
        for name in ("steps", "train_images", "heldout_images"):
            if getattr(self, name) < 1:
                raise InvalidValue(name, getattr(self, name), "must be at least 1")
