"""Reading a JSON file people hand us: size-capped, nesting-safe, every failure one clear message.

``json.loads`` raises ``RecursionError`` on deeply nested input and happily builds tens of gigabytes of
Python objects from a multi-gigabyte file; :func:`read_json` turns both into :class:`JsonFileError`.
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


def read_json(path: str | Path, what: str = "file") -> Any:
    """The parsed content of ``path`` (``what`` names it in messages, e.g. "annotation file")."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            raise JsonFileError(
                f"{path}: the {what} is {size / 2**30:.1f} GiB, above the {MAX_JSON_BYTES / 2**30:.0f} GiB "
                "that is read (parsing takes 5-10x the file size in memory); split it"
            )
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise JsonFileError(f"{path}: cannot read the {what}: {err}") from err
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise JsonFileError(
            f"{path}: invalid JSON at line {err.lineno} column {err.colno}: {err.msg} "
            "(truncated or corrupt file?)"
        ) from err
    except RecursionError as err:
        raise JsonFileError(
            f"{path}: the {what} is nested too deeply to read (thousands of levels of [ or {{): "
            "not a COCO file, or corrupt"
        ) from err
