"""``sam3tune demo``: run the demo and print the before/after table and where everything is."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from sam3tune.config import load_config, with_shortcuts
from sam3tune.demo.runner import DemoResult, DemoSettings, run_demo


def run_demo_command(
    config: str | None = None,
    overrides: Sequence[str] = (),
    out: Path | None = None,
    threads: int | None = None,
) -> int:
    """Run the demo of the :class:`DemoSettings` from the ``config`` file, ``key=value`` overrides, then
    ``out``, with ``threads`` torch CPU threads (None: torch's default); print the results.
    Exit status 0; bad input raises a :class:`~sam3tune.errors.UserError` (status 2)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    settings = load_config(DemoSettings, config, with_shortcuts(overrides, {"out": out}))
    if threads is not None:
        torch.set_num_threads(threads)
    print(
        "sam3tune demo: fine-tune a small SAM 3, pretrained on circles, squares, triangles, diamonds and "
        "hexagons, to find stars, hearts and moons (words it has never seen), then compare it with the "
        f"zero-shot model on held-out images ({torch.get_num_threads()} CPU thread(s))",
        flush=True,
    )
    started = time.perf_counter()
    result = run_demo(settings)
    print(summary(result, time.perf_counter() - started, settings))
    return 0


def _verdict(result: DemoResult) -> list[str]:
    """The report's zero-shot verdict line (the baseline is the run's starting model), if any."""
    verdict = json.loads(result.report.with_suffix(".json").read_text()).get("verdict")
    return [f"held-out {verdict['line']}", ""] if verdict else []


def summary(result: DemoResult, seconds: float, settings: DemoSettings) -> str:
    """The table, the timings and the paths of everything written."""
    phases = ", ".join(f"{name} {value:.0f} s" for name, value in result.seconds.items())
    lines = [
        "",
        f"{settings.heldout_images} held-out images x 3 prompts, after {settings.steps} fine-tuning steps on "
        f"{settings.train_images} images (percent):",
        "",
        result.table,
        "",
        *_verdict(result),
        f"done in {seconds / 60:.1f} min ({phases})",
        f"report (every metric, per prompt):  {result.report}",
        f"loss curve:                         {result.loss_curve}",
        f"overlays, zero-shot above tuned:    {result.overlays['side by side']}",
        f"overlays, one PNG per image:        {result.overlays['zero-shot']}  {result.overlays['tuned']}",
        f"tuned model:                        {result.tuned_model}",
        f"try it:  sam3tune predict --model {result.tuned_model} --prompt star --prompt heart --prompt moon "
        f"{result.report.parent.parent / 'data' / 'test'}",
    ]
    return "\n".join(lines)
