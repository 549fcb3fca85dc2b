"""Video frames, one at a time: a video file (PyAV), a folder of frame images, or a glob of them.

:func:`open_frames` never holds the video: a file is decoded frame by frame (frames before ``start`` or
between strides are decoded and dropped, as seeking to an exact frame is not reliable across codecs), and
frame images are read when their turn comes. Frame images sort by the numbers in their names
(``frame_2.jpg`` before ``frame_10.jpg``). An unreadable frame image is skipped and counted; a video file
that stops decoding ends the frames there (``FrameReader.error`` says why).

PyAV (``av``, the Python binding of FFmpeg's libraries) is an optional extra: ``pip install
'sam3tune[video]'``; frame folders need nothing more.
"""

from __future__ import annotations

import glob
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from PIL import Image

from sam3tune.data.images import read_rgb
from sam3tune.errors import UserError, require_package

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".mkv", ".avi", ".m4v", ".mpg", ".mpeg")
FRAME_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
_UNREADABLE = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


class VideoInputError(UserError, ValueError):
    """A video path that cannot be read as asked (names the path and what to do)."""


def require_av():
    """The ``av`` module (PyAV), or a :class:`~sam3tune.errors.MissingPackageError` saying how to add it."""
    return require_package(
        "av",
        "reading and writing video files (a folder of frame images works without it)",
        "pip install 'sam3tune[video]'",
    )


@dataclass
class FrameReader:
    """Frames of one video as ``(source frame index, RGB image)``, in order, after range and stride.

    ``fps``: the source's frame rate (frames per second of the *source*; the processed rate is
    ``fps / stride``); ``count``: frames this reader will yield when known in advance (None for a video
    file whose container does not say); ``skipped``: unreadable frame images (``file_name``, ``reason``);
    ``error``: why a video file stopped decoding early, else None."""

    path: str
    kind: str  # "file", "folder" or "glob"
    fps: float
    count: int | None
    start: int = 0
    end: int | None = None
    stride: int = 1
    max_frames: int | None = None
    files: list[Path] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    error: str | None = None

    def __iter__(self) -> Iterator[tuple[int, Image.Image]]:
        taken = 0
        for index, image in self._source():
            if index < self.start or (index - self.start) % self.stride:
                continue
            if (self.end is not None and index >= self.end) or (
                self.max_frames is not None and taken >= self.max_frames
            ):
                return
            taken += 1
            yield index, image

    def _source(self) -> Iterator[tuple[int, Image.Image]]:
        if self.kind != "file":
            for index, path in enumerate(self.files):
                if index < self.start or (index - self.start) % self.stride:
                    continue  # not read at all
                if self.end is not None and index >= self.end:
                    return
                try:
                    yield index, read_rgb(path)
                except _UNREADABLE as err:
                    self.skipped.append({"file_name": str(path), "reason": f"{type(err).__name__}: {err}"})
                    log.warning("skipped frame %s: not a readable image (%s)", path, err)
            return
        av = require_av()
        container = av.open(self.path)
        try:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            index = 0
            try:
                for frame in container.decode(stream):
                    yield index, frame.to_image()
                    index += 1
                    if self.end is not None and index >= self.end:
                        return
            except av.FFmpegError as err:
                self.error = f"decoding stopped at frame {index}: {err}"
                log.warning("%s: %s", self.path, self.error)
        finally:
            container.close()


def open_frames(
    path: str | Path,
    *,
    start: int = 0,
    end: int | None = None,
    stride: int = 1,
    max_frames: int | None = None,
    fps: float = 30.0,
) -> FrameReader:
    """A :class:`FrameReader` for ``path``: a video file (by suffix), a folder of frame images, or a glob
    pattern (``frames/*.jpg``). ``fps`` is the rate of frame images (files keep their own)."""
    text = str(path)
    settings = {"start": start, "end": end, "stride": stride, "max_frames": max_frames}
    if any(c in text for c in "*?[") and not Path(text).exists():
        files = sorted((Path(p) for p in glob.glob(text) if Path(p).is_file()), key=_natural_key)
        files = [p for p in files if p.suffix.lower() in FRAME_SUFFIXES]
        if not files:
            raise VideoInputError(f"{text}: the pattern matches no frame image ({', '.join(FRAME_SUFFIXES)})")
        return FrameReader(text, "glob", fps, _expected(len(files), **settings), files=files, **settings)
    source = Path(text)
    if source.is_dir():
        files = sorted(
            (p for p in source.iterdir() if p.is_file() and p.suffix.lower() in FRAME_SUFFIXES),
            key=_natural_key,
        )
        if not files:
            raise VideoInputError(f"{source}: a folder without frame images ({', '.join(FRAME_SUFFIXES)})")
        return FrameReader(text, "folder", fps, _expected(len(files), **settings), files=files, **settings)
    if not source.is_file():
        raise VideoInputError(f"{source}: no such video file, frame folder or glob")
    if source.suffix.lower() not in VIDEO_SUFFIXES:
        raise VideoInputError(
            f"{source}: not a video file by its suffix ({', '.join(VIDEO_SUFFIXES)}); give a video, a folder "
            "of frames or a glob"
        )
    av = require_av()
    try:
        with av.open(text) as container:
            if not container.streams.video:
                raise VideoInputError(f"{source}: the file holds no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or Fraction(fps)
            frames = int(stream.frames or 0) or None
    except av.FFmpegError as err:
        raise VideoInputError(f"{source}: not a readable video ({err})") from err
    count = _expected(frames, **settings) if frames is not None else None
    return FrameReader(text, "file", float(rate), count, **settings)


def _expected(total: int, start: int, end: int | None, stride: int, max_frames: int | None) -> int:
    stop = total if end is None else min(end, total)
    count = max(0, -(-(stop - start) // stride))
    return count if max_frames is None else min(count, max_frames)


def _natural_key(path: Path) -> list:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]
