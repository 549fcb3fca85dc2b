"""Files the tool writes: a failed write (disk full, no permission, a folder in the way) becomes a
:class:`WriteError` that names the file and the reason, instead of a bare ``OSError`` traceback that
often names neither (``write()`` on a full disk carries no file name).

No command deletes or replaces what it did not write. A command claims the folder the user names before
it writes there: :func:`claim_output_folder` for commands that write their files beside whatever else the
folder holds (``predict``, ``eval``, ``data synth``), :func:`claim_whole_folder` for commands that
replace the folder as a whole (the exports, ``import-checkpoint``). Both refuse a training run's folder,
a folder inside what training writes in one, and a folder holding runs (:func:`refuse_run_targets`);
``--overwrite`` replaces only the command's own earlier outputs."""

from __future__ import annotations

import fnmatch
import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from sam3tune.errors import UserError, on_path
from sam3tune.run_dir import RunDir


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


def refuse_run_targets(folder: str | Path, option: str, holding_runs: bool = False) -> None:
    """Refuse ``folder`` (given as ``option``: ``--out``, ``OUT``, ``output_dir``) as a command's output
    when it is a training run's folder, lies inside one of the parts training writes in a run
    (``checkpoints/``, ``model/``, ...; another folder in a run, ``RUN_DIR/eval``, is fine), or, unless
    ``holding_runs`` (``train``'s own ``output_dir``), holds training runs. Raises :class:`WriteError`
    naming the run; nothing is written."""
    folder = Path(folder)
    where = f"{option} {folder}".strip()
    with on_path(folder, "read", option, WriteError):
        resolved = folder.resolve()
        if RunDir(resolved).holds_training():
            raise WriteError(
                f"{where} is a training run's folder: its checkpoints, config.yaml and model are never "
                "another command's output; choose another folder (a new one inside the run, such as "
                f"{folder / 'eval'}, is fine)",
                path=folder,
                key=option or None,
            )
        for run in map(RunDir, resolved.parents):
            if not run.holds_training():
                continue
            part = run.path / resolved.relative_to(run.path).parts[0]
            if part in run.parts:
                raise WriteError(
                    f"{where} is inside {part.name}{'/' if part.suffix == '' else ''} of the training run "
                    f"{run.path}, which training writes; choose a folder outside it",
                    path=folder,
                    key=option or None,
                )
        if holding_runs or not resolved.is_dir():
            return
        runs = sorted(child.name for child in resolved.iterdir() if RunDir(child).holds_training())
        if runs:
            shown = ", ".join(runs[:5]) + (f", ... ({len(runs)} in all)" if len(runs) > 5 else "")
            message = f"{where} holds training runs ({shown}); choose another folder"
            raise WriteError(message, path=folder, key=option or None)


def _matches(name: str, outputs: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in outputs)


def claim_output_folder(
    folder: str | Path, outputs: Sequence[str], overwrite: bool, option: str = "--out"
) -> Path:
    """Make ``folder`` ready to receive ``outputs`` (file or folder names), refusing to mix a new run's
    results with an earlier one's. Whatever else the folder holds is left as it is.

    A run target (:func:`refuse_run_targets`), a ``folder`` that is a file, or one that already holds any
    of ``outputs`` raises :class:`WriteError` naming them, unless ``overwrite``: then those outputs (and
    only those) are removed first, so that no stale file (an overlay of an image no longer asked, say) is
    left beside the new ones."""
    folder = Path(folder)
    refuse_run_targets(folder, option)
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


def claim_whole_folder(
    folder: str | Path,
    outputs: Sequence[str],
    overwrite: bool,
    option: str = "OUT",
    what: str = "this command",
) -> Path:
    """Check that ``folder`` may be replaced as a whole by a command (``what``) whose files are named by
    ``outputs`` (names or ``fnmatch`` patterns, e.g. ``"*.onnx"``); it is then written through
    :func:`sam3tune.atomic.atomic_directory` (staged in ``NAME.tmp``, the old one kept in ``NAME.old``
    until the rename).

    Refused with a :class:`WriteError` (nothing changed): a run target (:func:`refuse_run_targets`); a
    file; a folder holding anything that is not one of ``outputs`` (named); a folder holding an earlier
    output, unless ``overwrite``; a ``NAME.tmp`` / ``NAME.old`` beside it holding anything else than
    ``outputs`` (the atomic write would remove it). A new or empty folder is accepted."""
    folder = Path(folder)
    refuse_run_targets(folder, option)
    with on_path(folder, "read", option, WriteError):
        if folder.exists() and not folder.is_dir():
            message = f"{option} {folder} exists and is not a folder; choose a new folder"
            raise WriteError(message, path=folder)
        held = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
        foreign = [name for name in held if not _matches(name, outputs)]
        if foreign:
            raise WriteError(
                f"{option} {folder} holds {_listed(foreign)}, which {what} did not write; nothing was "
                "changed: choose a new or empty folder",
                path=folder,
            )
        if held and not overwrite:
            raise WriteError(
                f"{option} {folder} already holds an earlier output ({_listed(held)}); pass --overwrite to "
                f"replace it, or choose another {option}",
                path=folder,
            )
        for suffix in (".tmp", ".old"):
            sibling = folder.with_name(folder.name + suffix)
            if not sibling.exists() and not sibling.is_symlink():
                continue
            is_folder = sibling.is_dir() and not sibling.is_symlink()
            stray = [p.name for p in sibling.iterdir() if not _matches(p.name, outputs)] if is_folder else []
            if stray or not is_folder:
                raise WriteError(
                    f"{sibling} is in the way: writing {option} {folder} stages it there"
                    f"{f' and it holds {_listed(stray)}' if stray else ''}, which {what} did not write; "
                    "move it away or choose another folder",
                    path=sibling,
                )
    return folder


def _listed(names: Sequence[str], most: int = 5) -> str:
    return ", ".join(names[:most]) + (f", ... ({len(names)} in all)" if len(names) > most else "")
