"""One training process per run directory: an OS lock on ``RUN_DIR/.lock``.

Two processes training in one run directory overwrite each other's checkpoints and ``metrics.jsonl``.
:func:`run_lock` takes an exclusive ``flock`` on ``RUN_DIR/.lock`` for as long as the run trains; a
second ``sam3tune train --resume RUN_DIR`` is refused at once with the pid of the holder. The kernel
releases the lock when the holder exits, however it exits (crash, SIGKILL), so a stale lock file never
blocks a resume. Under ``torchrun`` only rank 0 takes it (the other ranks write nothing there).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sam3tune.errors import UserError
from sam3tune.run_dir import RunDir


class RunLockedError(UserError, RuntimeError):
    """Another process is training in this run directory."""


@contextmanager
def run_lock(run_dir: str | Path) -> Iterator[Path]:
    """Hold the lock of ``run_dir`` (which must exist) inside the ``with`` block; yields the lock file.

    Raises :class:`RunLockedError` naming the holder's pid when another process holds it."""
    path = RunDir(run_dir).lock_file
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise RunLockedError(
                f"{run_dir} is in use: another process (pid {holder}) is training in it. Wait for it to "
                "finish or stop it (Ctrl-C saves a resumable checkpoint), then resume."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
