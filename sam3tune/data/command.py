"""``sam3tune data inspect`` and ``sam3tune data synth``."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from sam3tune.config import load_config, with_shortcuts
from sam3tune.data.config import DataConfig
from sam3tune.data.inspection import format_report, inspect_dataset
from sam3tune.data.synth import SynthConfig, generate


def run_inspect_command(
    path: Path,
    config: str | None = None,
    overrides: Sequence[str] = (),
    as_json: bool = False,
    images: Path | None = None,
) -> int:
    """Inspect the dataset at ``path`` (root, split folder or COCO JSON; ``images``: the image folder of a
    JSON file) read with the :class:`DataConfig` of the ``config`` file and ``key=value`` overrides; print
    the report (text or JSON). Exit status 0 when every split is usable, 1 when one is not, 2 for bad
    input (message on stderr)."""
    try:
        settings = load_config(DataConfig, config, overrides)
    except ValueError as err:  # ConfigError, or DataConfig's own checks
        print(f"sam3tune data inspect: {err}", file=sys.stderr)
        return 2
    report = inspect_dataset(path, settings, images, progress=not as_json)
    sys.stdout.write((json.dumps(report, indent=2) if as_json else format_report(report)) + "\n")
    return 0 if report["ok"] else 1


def run_synth_command(
    out: Path, config: str | None = None, overrides: Sequence[str] = (), images: int | None = None
) -> int:
    """Write the synthetic dataset of the :class:`SynthConfig` from the ``config`` file, ``key=value``
    overrides, then ``images`` (``images`` training images, a quarter of that, at least 1, for valid and
    test) under ``out``. Exit status 0, or 2 for bad input (message on stderr)."""
    splits = None
    if images is not None:
        held_out = max(1, images // 4)
        splits = [["train", images], ["valid", held_out], ["test", held_out]]
    try:
        if images is not None and images < 1:
            raise ValueError("--images must be at least 1")
        settings = load_config(SynthConfig, config, with_shortcuts(overrides, {"splits": splits}))
        summary = generate(settings, out)
    except ValueError as err:  # ConfigError, or SynthConfig's own checks
        print(f"sam3tune data synth: {err}", file=sys.stderr)
        return 2
    for split, count in summary.images.items():
        print(f"{out / split}: {count} images, {summary.objects[split]} objects")
    return 0
