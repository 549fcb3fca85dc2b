"""Progress display, decided in one place for every loop of the package.

On a terminal, :func:`progress_bar` is a plain ``tqdm`` bar redrawn in place. When stderr is not a
terminal (CI, ``nohup``, ``> train.log 2>&1``) a redrawn bar would write thousands of carriage-return
updates into the log; there it prints one plain line every :data:`LINE_INTERVAL_S` seconds at most and
one when the loop ends (for training: one line per epoch, plus one per interval in long epochs).
``SAM3TUNE_PROGRESS=bar`` or ``lines`` forces either way.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any, TextIO

from tqdm import tqdm

LINE_INTERVAL_S = 30.0
_LINE_FORMAT = "{desc}: {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"


def progress_bar(iterable: Iterable | None = None, **kwargs: Any) -> tqdm:
    """``tqdm(iterable, **kwargs)`` drawn as a bar on a terminal, as log lines elsewhere (module doc)."""
    stream = kwargs.pop("file", None) or sys.stderr
    if kwargs.get("disable") or _draws_bars(stream):
        return tqdm(iterable, file=stream, **kwargs)
    kwargs.pop("dynamic_ncols", None)
    kwargs.update(
        file=_LineStream(stream),
        mininterval=LINE_INTERVAL_S,
        miniters=1,
        delay=LINE_INTERVAL_S,  # no line at the start; the first after an interval, the last at the end
        leave=True,
        ascii=True,
        bar_format=_LINE_FORMAT if kwargs.get("total") is not None or _has_len(iterable) else None,
    )
    return _LineBar(iterable, **kwargs)


class _LineBar(tqdm):
    """tqdm whose final line is written even when the loop ended before the first interval."""

    def close(self) -> None:
        never_shown = hasattr(self, "last_print_t") and self.last_print_t < self.start_t + self.delay
        if not self.disable and never_shown:
            self.display()
        super().close()


def _draws_bars(stream: TextIO) -> bool:
    forced = os.environ.get("SAM3TUNE_PROGRESS", "").strip().lower()
    if forced in ("bar", "lines"):
        return forced == "bar"
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def _has_len(iterable: Iterable | None) -> bool:
    try:
        len(iterable)  # type: ignore[arg-type]
    except TypeError:
        return False
    return True


class _LineStream:
    """A file for tqdm that turns each in-place redraw into one line (blank clears and repeats dropped)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._last = ""

    def write(self, text: str) -> None:
        line = text.replace("\r", "").strip()
        if line and line != self._last:
            self.stream.write(line + "\n")
            self._last = line

    def flush(self) -> None:
        self.stream.flush()
