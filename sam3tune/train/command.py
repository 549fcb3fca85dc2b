"""``sam3tune train``: the command-line entry of :func:`sam3tune.train.recipe.train`."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from sam3tune.config import ConfigError, load_config, with_shortcuts
from sam3tune.errors import EXIT_INTERRUPTED, EXIT_OK
from sam3tune.run_dir import RunDir
from sam3tune.train.config import TrainConfig


def run_train_command(
    config: str | None = None,
    overrides: Sequence[str] = (),
    data: str | None = None,
    model: str | None = None,
    resume: str | None = None,
    allow_inexact_resume: bool = False,
) -> int:
    """Load the config (``config`` file, then ``key=value`` overrides, then ``data`` / ``model``, which set
    ``data.root`` / ``model.name``) or the config of the run being resumed, train, and return the exit
    status: 0 done, 130 stopped by a signal (resumable). Bad input raises a
    :class:`~sam3tune.errors.UserError` (status 2), a diverged run ``TrainingDivergedError`` (status 3)."""
    config_path = config
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    from sam3tune.train.recipe import train

    overrides = with_shortcuts(overrides, {"data.root": data, "model.name": model})
    if resume is not None:
        if config_path is not None:
            raise ConfigError("--resume continues a run with its own config.yaml; drop --config")
        config = RunDir(resume).config(overrides)
    else:
        config = load_config(TrainConfig, config_path, overrides)
        if config.data.root is None:
            raise ConfigError("no dataset: pass --data PATH (or set data.root in the config)")
    if allow_inexact_resume and resume is None:
        raise ConfigError("--allow-inexact-resume goes with --resume RUN_DIR")
    result = train(config, resume=Path(resume) if resume else None, allow_inexact_resume=allow_inexact_resume)
    if rank == 0:
        print(_summary(result))
        verdict = _verdict(result, config)
        if verdict is not None:
            print(verdict.line())
    return EXIT_OK if result.status == "completed" else EXIT_INTERRUPTED


def _summary(result) -> str:
    lines = [f"run {result.status}: {result.steps}/{result.total_steps} steps, {result.epochs} epoch(s)"]
    if result.last_train.get("loss") is not None:
        lines.append(f"last training loss: {result.last_train['loss']:.4g}")
    if result.skipped_steps:
        lines.append(f"steps skipped for a NaN/inf loss: {result.skipped_steps}")
    if result.last_val:
        shown = {k: v for k, v in result.last_val.items() if "_aux_" not in k and "o2m" not in k}
        lines.append("last validation: " + ", ".join(f"{k}={v:.4g}" for k, v in shown.items()))
    lines.append(f"run directory: {result.run_dir}")
    if result.status == "interrupted":
        lines.append(f"continue with: sam3tune train --resume {result.run_dir}")
    return "\n".join(lines)


def _verdict(result, config: TrainConfig):
    """The zero-shot verdict of a completed run with validation (None otherwise)."""
    from sam3tune.eval.verdict import verdict_from_records
    from sam3tune.train.metrics_log import read_metrics

    if result.status != "completed":
        return None
    records = read_metrics(RunDir(result.run_dir).metrics_file)
    return verdict_from_records(records, config.val.best_metric, config.val.best_mode, result.best_checkpoint)
