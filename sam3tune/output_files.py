"""Files the tool writes: a failed write (disk full, no permission, a folder in the way) becomes a
:class:`WriteError` that names the file and the reason, instead of a bare ``OSError`` traceback that
often names neither (``write()`` on a full disk carries no file name)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class WriteError(RuntimeError):
    """A file or folder could not be written; the message names it and says why."""


@contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Turn an ``OSError`` raised inside the block into a :class:`WriteError` naming ``path``."""
    try:
        yield
    except OSError as err:
        reason = err.strerror or str(err)
        other = f" ({err.filename})" if err.filename and str(err.filename) != str(path) else ""
        raise WriteError(f"cannot write {path}: {reason}{other}") from err


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
