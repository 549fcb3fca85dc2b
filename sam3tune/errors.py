"""Errors the person running sam3tune can fix, and the exit status of each kind.

A problem with what the user gave (a config key, a file, an entry of a file, a folder, a model name) is
raised as a :class:`UserError` where it is found, with a message that names what to fix: the file, the
image / annotation id or line, the config key. The ``sam3tune`` command (:func:`sam3tune.cli.main`)
catches them in one place and prints ``sam3tune COMMAND: message`` with no traceback (``--debug`` or
``SAM3TUNE_DEBUG=1`` shows it) and exits with the kind's :attr:`UserError.exit_status`. Any other
exception is a bug in sam3tune and keeps its traceback.

An ``OSError`` on a path the user gave (no such file, a file where a folder belongs, permission, a name
the filesystem refuses, a full disk) becomes a :class:`UserError` naming the path and, where it came from
a config key or an option, that key (:func:`on_path`).

The error classes of the packages (``ConfigError``, ``DataError``, ``WriteError``, ...) derive from
:class:`UserError`; those that were a ``ValueError`` or a ``RuntimeError`` before still are, so library
code that caught those keeps working.
"""

from __future__ import annotations

import importlib
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

EXIT_OK = 0
#: a check ran and found a problem it reports (``doctor``: an error flag; ``data inspect``: a split
#: that cannot be used); not an error of the command
EXIT_CHECK_FAILED = 1
#: bad input: a config key, a file or folder, an entry of a file, a model name; or an output that cannot
#: be written (a file in the way, no permission, disk full). The message names it.
EXIT_BAD_INPUT = 2
#: the work could not finish for a reason the message gives: training diverged (``train``; ``last``
#: saved), no Hugging Face login for ``--push`` (``export``; the folder is written)
EXIT_NOT_FINISHED = 3
#: stopped by Ctrl-C or SIGTERM (``train`` saves a resumable checkpoint first)
EXIT_INTERRUPTED = 130


class UserError(Exception):
    """A problem the user can fix; the message names the file, entry or config key involved.

    ``path`` and ``key``, when known, are the path and the config key (or option) the problem is about."""

    exit_status: int = EXIT_BAD_INPUT

    def __init__(self, message: str, *, path: str | Path | None = None, key: str | None = None) -> None:
        super().__init__(message)
        self.path, self.key = path, key


def describe_os_error(err: OSError, path: str | Path, doing: str, key: str | None = None) -> str:
    """``cannot DOING PATH (KEY): reason`` for ``err``, naming the file the system names when it is
    another one (the parent folder that is a file, say)."""
    reason = err.strerror or str(err)
    other = f" ({err.filename})" if err.filename and str(err.filename) != str(path) else ""
    return f"cannot {doing} {path}{f' ({key})' if key else ''}: {reason}{other}"


@contextmanager
def on_path(
    path: str | Path,
    doing: str = "read",
    key: str | None = None,
    error: type[UserError] = UserError,
    also: tuple[type[Exception], ...] = (),
) -> Iterator[None]:
    """Turn an ``OSError`` raised inside the block into ``error`` (a :class:`UserError`) naming ``path``,
    what was being done (``"read"``, ``"write"``) and ``key``, the config key or option ``path`` came
    from. ``also``: exceptions of writers that report a failed write without an ``OSError`` (safetensors'
    ``SafetensorError`` and ``torch.save``'s ``RuntimeError`` on a full disk); their message is kept,
    with the free space of ``path``'s disk. A ``path`` holding a NUL character (which no file name can
    hold; Python raises ``ValueError`` for it) is refused at once."""
    where = f"{str(path)!r}{f' ({key})' if key else ''}"
    if "\0" in str(path):
        raise error(f"cannot {doing} {where}: a file name cannot hold a NUL character", path=path, key=key)
    try:
        yield
    except UserError:
        raise
    except OSError as err:
        raise error(describe_os_error(err, path, doing, key), path=path, key=key) from err
    except also as err:
        where = f"{path}{f' ({key})' if key else ''}"
        message = f"cannot {doing} {where}: {err}{_free_space(Path(path))}"
        raise error(message, path=path, key=key) from err


def _free_space(path: Path) -> str:
    """`` (N MiB free on its disk)`` for the nearest existing folder of ``path``, or nothing."""
    for folder in (path, *path.parents):
        try:
            return f" ({shutil.disk_usage(folder).free / 2**20:.0f} MiB free on its disk)"
        except OSError:
            continue
    return ""


class MissingPackageError(UserError, ImportError):
    """An optional package that a chosen feature needs is not installed; the message says how to add it."""


def require_package(module: str, what: str, install: str) -> ModuleType:
    """Import ``module``, or raise :class:`MissingPackageError` saying that ``what`` needs it and the
    ``install`` command that adds it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingPackageError(f"{what} needs {module}, which is not installed: {install}") from err
