"""Reading JSON people hand us: strict, size-capped and nesting-safe, every failure one clear message.

``json.loads`` keeps the last of a key given twice in one object (``{"score": 0.9, "score": 0.1}`` reads
as 0.1, silently), raises ``RecursionError`` on deeply nested input and happily builds tens of gigabytes of
Python objects from a multi-gigabyte file; :func:`read_json` and :func:`loads_strict` turn all three into
a :class:`JsonFileError` naming the file (and the repeated key).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sam3tune.errors import UserError

MAX_JSON_BYTES = 2 << 30
"""Largest JSON file read (2 GiB; LVIS train is ~1.1 GB). Parsed, a file takes 5-10x its size in memory."""


class JsonFileError(UserError, ValueError):
    """A JSON file that cannot be read; the message names the file and what is wrong."""


def loads_strict(text: str, where: str | Path, what: str = "file") -> Any:
    """Parse JSON ``text`` read from ``where`` (named in messages, with ``what`` it is); a key given twice
    in one object, invalid JSON and absurd nesting raise :class:`JsonFileError`."""
    try:
        return json.loads(text, object_pairs_hook=lambda pairs: _object(pairs, where))
    except json.JSONDecodeError as err:
        raise JsonFileError(
            f"{where}: invalid JSON at line {err.lineno} column {err.colno}: {err.msg} "
            "(truncated or corrupt file?)",
            path=where,
        ) from err
    except RecursionError as err:
        raise JsonFileError(
            f"{where}: the {what} is nested too deeply to read (thousands of levels of [ or {{): "
            "not a COCO file, or corrupt",
            path=where,
        ) from err


def read_json(path: str | Path, what: str = "file") -> Any:
    """The parsed content of ``path`` (``what`` names it in messages, e.g. "annotation file"), read
    strictly (:func:`loads_strict`)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            raise JsonFileError(
                f"{path}: the {what} is {size / 2**30:.1f} GiB, above the {MAX_JSON_BYTES / 2**30:.0f} GiB "
                "that is read (parsing takes 5-10x the file size in memory); split it",
                path=path,
            )
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise JsonFileError(f"{path}: cannot read the {what}: {err}", path=path) from err
    return loads_strict(text, path, what)


def _object(pairs: list[tuple[str, Any]], where: str | Path) -> dict[str, Any]:
    """One JSON object; a key given twice is refused, naming it (and the object's ``id`` if it has one)."""
    obj = dict(pairs)
    if len(obj) == len(pairs):
        return obj
    seen: set[str] = set()
    repeated = next(k for k, _ in pairs if k in seen or seen.add(k))
    owner = f" (the object with id {obj['id']!r:.40})" if "id" in obj and repeated != "id" else ""
    raise JsonFileError(
        f"{where}: key {repeated!r} is given twice in one object{owner}; JSON readers keep only one of the "
        "values, silently: remove the other",
        path=where,
    )
