"""Directories written atomically: a crash at any moment leaves the previous complete directory or the new
one, never a mix. Training checkpoints (``sam3tune.train.checkpoint``) and exported models
(``sam3tune.model.export``) are written through :func:`atomic_directory`.

The new content goes to ``<name>.tmp``; every file and folder in it is fsync'ed; then the old ``<name>`` is
renamed to ``<name>.old``, ``<name>.tmp`` to ``<name>``, the parent folder is fsync'ed and ``<name>.old``
removed. A crash between the two renames leaves a complete ``<name>.old`` (see :func:`complete_copy`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_directory(directory: str | Path) -> Iterator[Path]:
    """Yield an empty staging folder to fill; it replaces ``directory`` only when the block succeeds (on an
    exception the staging folder is removed and ``directory`` is left as it was)."""
    target = Path(directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging, retired = _sibling(target, ".tmp"), _sibling(target, ".old")
    if staging.exists():
        shutil.rmtree(staging)  # left by a crash while writing
    staging.mkdir()
    try:
        yield staging
        _fsync_tree(staging)
        if target.exists():
            if retired.exists():
                shutil.rmtree(retired)
            os.rename(target, retired)
        os.rename(staging, target)
        _fsync(target.parent)
        if retired.exists():
            shutil.rmtree(retired)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def complete_copy(directory: str | Path, is_complete) -> Path | None:
    """``directory``, or the ``<name>.old`` copy a crash between the two renames left, whichever
    ``is_complete(path)`` accepts first; None when neither is."""
    directory = Path(directory)
    for candidate in (directory, _sibling(directory, ".old")):
        if is_complete(candidate):
            return candidate
    return None


def _sibling(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def _fsync_tree(root: Path) -> None:
    for folder, _, files in os.walk(root):
        for name in files:
            _fsync(Path(folder) / name)
        _fsync(Path(folder))


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
