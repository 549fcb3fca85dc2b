"""What ``sam3tune demo`` does, as one dataclass: the single home of the demo's defaults (the CLI reads
them from here without importing torch)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


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
    overrides: list[str] = field(default_factory=list)  # extra TrainConfig key=value for the fine-tune
