"""The run's metric log: one JSON object per line in ``RUN_DIR/metrics.jsonl`` and the same scalars in
TensorBoard (``RUN_DIR/tb``), both named by :class:`~sam3tune.run_dir.RunDir`.

Every record has ``kind`` (``train`` for an optimizer step, ``val`` for a validation), ``step`` (the
number of optimizer steps completed when it was written) and ``epoch``; the rest are scalars. When a
run resumes from a checkpoint taken after step ``s``, records with a step beyond ``s`` (written by the
crashed process after its last checkpoint) are removed, so the log reads as one uninterrupted run.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

from torch.utils.tensorboard import SummaryWriter

from sam3tune.output_files import write_text_atomic, writing
from sam3tune.run_dir import RunDir


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """All records of a ``metrics.jsonl`` (a torn last line from a crash, or any line that is not a record
    with a ``step``, is ignored)."""
    records = []
    if not Path(path).exists():
        return records
    for line in Path(path).read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append(record)
    return records


class MetricsLog:
    """Appends records to ``metrics.jsonl`` and TensorBoard; on resume, first trims both to
    ``resume_step``."""

    def __init__(self, run: RunDir, resume_step: int | None = None) -> None:
        run.path.mkdir(parents=True, exist_ok=True)
        self.path = run.metrics_file
        if resume_step is not None:
            kept = [r for r in read_metrics(self.path) if r["step"] <= resume_step]
            write_text_atomic(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        self._file = open(self.path, "a")  # noqa: SIM115 (open for the run's lifetime; closed in close())
        purge = resume_step + 1 if resume_step is not None else None
        self._writer = SummaryWriter(str(run.tensorboard_dir), purge_step=purge)

    def write(self, record: dict[str, Any]) -> None:
        """Append one record (``kind``, ``step``, ``epoch`` and scalars; NaN/inf are written as null);
        flushed at once."""
        clean = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in record.items()}
        with writing(self.path):
            self._file.write(json.dumps(clean) + "\n")
            self._file.flush()
        prefix = record["kind"]
        for key, value in record.items():
            if key in ("kind", "step", "epoch") or not isinstance(value, (int, float)):
                continue
            if isinstance(value, bool) or not math.isfinite(value):  # skipped steps stay out
                continue
            self._writer.add_scalar(f"{prefix}/{key}", value, record["step"])

    def close(self) -> None:
        self._file.close()
        self._writer.close()


def discard_metrics(run: RunDir) -> None:
    """Remove the run's metric log and TensorBoard events (a failed attempt restarted from its first step)."""
    run.metrics_file.unlink(missing_ok=True)
    shutil.rmtree(run.tensorboard_dir, ignore_errors=True)
