"""What ``sam3tune train --resume RUN_DIR`` checks before it writes anything.

- **The checkpoint.** :func:`find_resume_point` reads ``checkpoints/last`` (or the ``last.old`` a crash
  mid-swap leaves); when that is truncated or corrupt it says which file and falls back to
  ``checkpoints/best``, a complete checkpoint of an earlier step written the same way (the steps after it
  are trained again; ``metrics.jsonl`` is trimmed to it). No extra copy of ``last`` is kept: for a full
  fine-tune one checkpoint is several GB.
- **The overrides.** Resume is exact only if everything that shapes the computation is unchanged, so
  :func:`resume_changes` refuses a change to any key outside :data:`RESUMABLE_KEYS` (seed, data, model,
  loss, optimiser, schedule, batch size, ...) unless the caller allows an inexact resume.
- **The record.** :func:`record_resume` appends what changed to ``RUN_DIR/resumes.jsonl``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sam3tune.config import ConfigError, to_dict
from sam3tune.output_files import writing
from sam3tune.run_dir import RunDir
from sam3tune.train.checkpoint import STATE_FILE, CheckpointError, find_checkpoint, load_checkpoint
from sam3tune.train.config import TrainConfig

log = logging.getLogger(__name__)

#: Keys a resume may change without breaking exactness of the steps already planned: how long the run
#: goes on, where and how fast it runs, how often it saves and validates.
RESUMABLE_KEYS = (
    "loop.epochs",
    "loop.max_steps",
    "loop.device",
    "loop.num_workers",
    "loop.max_consecutive_nonfinite",
    "loop.checkpoint_every_epochs",
    "loop.checkpoint_every_steps",
    "loop.find_unused_parameters",
    "val.every_epochs",
    "val.map",
    "val.eval.",
    "export",
)


@dataclass
class ResumePoint:
    """A checkpoint read completely: its directory and its three parts."""

    path: Path
    model_state: dict[str, torch.Tensor]
    training_state: dict[str, Any]
    meta: dict[str, Any]


def read_checkpoint(directory: Path) -> ResumePoint:
    """Read the checkpoint at ``directory`` (or its ``.old``); a missing, truncated or corrupt file raises
    :class:`CheckpointError` naming it."""
    found = find_checkpoint(directory)
    model_state, training_state, meta = load_checkpoint(found)
    if not isinstance(training_state, dict) or "step" not in training_state:
        raise CheckpointError(f"checkpoint file {found / STATE_FILE} holds no training state")
    return ResumePoint(found, model_state, training_state, meta)


def find_resume_point(run: RunDir) -> ResumePoint:
    """The checkpoint to resume ``run`` from: ``last``, else (unreadable) ``best``. Raises
    :class:`CheckpointError` listing what was wrong with each when neither can be read."""
    problems = []
    for name in ("last", "best"):
        try:
            point = read_checkpoint(run.checkpoint(name))
        except CheckpointError as err:
            problems.append(str(err))
            continue
        if problems:
            log.warning(
                "%s; resuming from %s (step %d) instead",
                "; ".join(problems),
                point.path,
                point.training_state["step"],
            )
        return point
    raise CheckpointError(
        f"cannot resume {run.path}: " + "; ".join(problems) + ". Nothing was changed in the run directory."
    )


def resume_changes(
    saved: TrainConfig, requested: TrainConfig, allow_inexact: bool = False
) -> dict[str, list]:
    """``{key: [saved value, requested value]}`` for every key that differs. A change outside
    :data:`RESUMABLE_KEYS` raises :class:`ConfigError` (naming the keys) unless ``allow_inexact``."""
    old, new = _flatten(to_dict(saved)), _flatten(to_dict(requested))
    changes = {k: [old.get(k), new.get(k)] for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)}
    fixed = _fixed_keys(changes)
    if fixed and not allow_inexact:
        shown = ", ".join(f"{k} ({changes[k][0]!r} -> {changes[k][1]!r})" for k in fixed)
        raise ConfigError(
            f"resume would not be exact: {shown} differ from the run's config.yaml. A resume may change "
            f"only {', '.join(RESUMABLE_KEYS)}; start a new run, or pass --allow-inexact-resume (recorded in "
            "the run's resumes.jsonl)"
        )
    return changes


def record_resume(run: RunDir, point: ResumePoint, changes: dict[str, list]) -> None:
    """Append one line to ``RUN_DIR/resumes.jsonl``: when, from which checkpoint and step, what changed
    and whether the resume is exact (no change outside :data:`RESUMABLE_KEYS`)."""
    exact = not _fixed_keys(changes)
    record = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "checkpoint": str(point.path.relative_to(run.path)),
        "step": point.training_state["step"],
        "exact": exact,
        "changes": changes,
    }
    path = run.resumes_file
    with writing(path), open(path, "a") as handle:
        handle.write(json.dumps(record) + "\n")


def _fixed_keys(changes: dict[str, list]) -> list[str]:
    return [
        k for k in changes if not any(k == r or (r.endswith(".") and k.startswith(r)) for r in RESUMABLE_KEYS)
    ]


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        flat: dict[str, Any] = {}
        for key, value in tree.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: tree}
