"""Files the tool writes: a failed write (disk full, no permission, a folder in the way) becomes a
:class:`WriteError` that names the file and the reason, instead of a bare ``OSError`` traceback that
often names neither (``write()`` on a full disk carries no file name)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from sam3tune.errors import UserError, on_path


class WriteError(UserError, RuntimeError):
    """A file or folder could not be written; the message names it and says why."""


@contextmanager
def writing(
    path: str | Path, key: str | None = None, also: tuple[type[Exception], ...] = ()
) -> Iterator[None]:
    """Turn an ``OSError`` raised inside the block (and ``also`` those exceptions, see
    :func:`~sam3tune.errors.on_path`) into a :class:`WriteError` naming ``path`` and ``key``, the config
    key or option it came from (``output_dir``, ``--out``)."""
    with on_path(path, "write", key, WriteError, also):
        yield


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename: readers see the old file or the
    new one, never half of it. Raises :class:`WriteError`."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)


def claim_output_folder(
    folder: str | Path, outputs: Sequence[str], overwrite: bool, option: str = "--out"
) -> Path:
    """Make ``folder`` ready to receive ``outputs`` (file or folder names), refusing to mix a new run's
    results with an earlier one's.

    A ``folder`` that is a file, or that already holds any of ``outputs``, raises :class:`WriteError`
    naming them, unless ``overwrite``: then those outputs (and only those) are removed first, so that no
    stale file (an overlay of an image no longer asked, say) is left beside the new ones."""
    folder = Path(folder)
    with writing(folder, option):
        if folder.exists() and not folder.is_dir():
            raise WriteError(f"{option} {folder} exists and is not a folder; choose a folder path")
        present = [name for name in outputs if (folder / name).exists() or (folder / name).is_symlink()]
        if present and not overwrite:
            raise WriteError(
                f"{option} {folder} already holds results ({', '.join(present)}); pass --overwrite to "
                f"replace them, or choose another {option}"
            )
        for name in present:
            target = folder / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            else:
                target.unlink()
        folder.mkdir(parents=True, exist_ok=True)
    return folder
