"""``sam3tune doctor``: load the run config as ``sam3tune train`` does, diagnose it, print the report."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from sam3tune.config import ConfigError, load_config, with_shortcuts
from sam3tune.errors import EXIT_CHECK_FAILED, EXIT_OK


def run_doctor_command(
    config: str | None = None,
    overrides: Sequence[str] = (),
    data: str | None = None,
    model: str | None = None,
    ladder: bool = False,
) -> int:
    """Config from the ``config`` file, then ``key=value`` overrides, then ``data`` / ``model`` (the train
    command's order); print the report (``ladder``: with one step per memory rung). Exit status: 0 no
    error flag, 1 an error flag; bad input raises a :class:`~sam3tune.errors.UserError` (status 2)."""
    from sam3tune.devices import resolve_device
    from sam3tune.doctor.diagnosis import diagnose
    from sam3tune.doctor.text_report import format_report
    from sam3tune.train.config import TrainConfig

    overrides = with_shortcuts(overrides, {"data.root": data, "model.name": model})
    config = load_config(TrainConfig, config, overrides)
    resolve_device(config.loop.device)  # a device this machine lacks: named here, not deep in torch
    if config.data.root is None:
        raise ConfigError("no dataset: pass --data PATH (or set data.root in the config)")
    report = diagnose(config, progress=True, say=_say, ladder=ladder)
    print(format_report(report))
    return EXIT_OK if report.ok else EXIT_CHECK_FAILED


def _say(line: str) -> None:
    print(f"doctor: {line}", file=sys.stderr)
