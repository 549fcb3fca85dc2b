"""What ``predict --video`` writes, each as frames finish, none of it held whole in memory.

* ``frames.jsonl``: one line per processed frame, appended when the frame is done (a Ctrl-C keeps every
  line written): ``frame`` (0-based processed index), ``source_frame``, ``time`` (seconds into the source),
  ``objects`` (``track_id``, ``category_id`` = 1-based prompt, ``prompt``, ``score``, ``tracker_score``,
  ``bbox`` xywh pixels, ``segmentation`` COCO compressed RLE);
* ``tracks.json``: the YouTube-VIS results format, one entry per track: ``video_id`` (1), ``category_id``,
  ``score``, ``track_id`` and ``segmentations`` (one RLE or null per processed frame). It is assembled at
  the end from per-track spool files (``.tracks/<id>.jsonl``, removed afterwards), so a long video's
  masks are never all in memory;
* ``overlay.mp4``: each processed frame with every track's mask in its colour and its id drawn, at the
  source frame rate divided by the stride.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

from sam3tune.eval.rle import encode_masks
from sam3tune.output_files import writing
from sam3tune.video.frames import require_av
from sam3tune.video.tracks import TrackedObject

SPOOL = ".tracks"


def object_records(objects: Sequence[TrackedObject], prompts: Sequence[str]) -> list[dict]:
    """The ``frames.jsonl`` entries of one frame's objects (with their RLEs)."""
    if not objects:
        return []
    rles = encode_masks(np.stack([o.mask for o in objects]))
    return [
        {
            "track_id": o.track_id,
            "category_id": o.prompt + 1,
            "prompt": prompts[o.prompt],
            "score": round(o.score, 6),
            "tracker_score": round(o.tracker_score, 6),
            "bbox": [o.box[0], o.box[1], o.box[2] - o.box[0], o.box[3] - o.box[1]],
            "segmentation": rle,
        }
        for o, rle in zip(objects, rles, strict=True)
    ]


class TrackSpool:
    """Per-track files of ``(frame, RLE)`` lines, appended as frames finish, and their assembly into
    ``tracks.json``."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.tracks: dict[int, dict] = {}  # track id -> {"category_id", "score"}

    def add(self, frame: int, records: Sequence[dict]) -> None:
        for record in records:
            track = record["track_id"]
            self.tracks.setdefault(track, {"category_id": record["category_id"], "score": record["score"]})
            path = self.folder / f"{track}.jsonl"
            with writing(path):
                self.folder.mkdir(exist_ok=True)
                with open(path, "a", encoding="utf-8") as handle:
                    handle.write(json.dumps([frame, record["segmentation"]]) + "\n")

    def write_results(self, path: Path, frames: int, video_id: int = 1) -> int:
        """Write ``tracks.json`` (YouTube-VIS results) for ``frames`` processed frames, one track at a time
        and one line at a time; returns the number of tracks. Written to a temporary name, then renamed."""
        tmp = path.with_name(path.name + ".tmp")
        with writing(path), open(tmp, "w", encoding="utf-8") as out:
            out.write("[")
            for n, (track, info) in enumerate(sorted(self.tracks.items())):
                head = {"video_id": video_id, "track_id": track, **info}
                out.write(("," if n else "") + "\n" + json.dumps(head)[:-1] + ', "segmentations": [')
                for i, item in enumerate(_segmentations(self.folder / f"{track}.jsonl", frames)):
                    out.write((", " if i else "") + item)
                out.write("]}")
            out.write("\n]\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
        return len(self.tracks)

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


class OverlayWriter:
    """``overlay.mp4``: RGB frames encoded with PyAV (``codec``, else mpeg4 when this FFmpeg build lacks it),
    yuv420p; a frame of odd width or height is padded by one pixel (the format needs even sides)."""

    def __init__(self, path: Path, fps: float, width: int, height: int, codec: str = "libx264"):
        av = require_av()
        self.path = path
        self.size = (width + width % 2, height + height % 2)
        with writing(path):
            self.container = av.open(str(path), mode="w")
        try:
            available = codec in av.codecs_available
            self.stream = self.container.add_stream(codec if available else "mpeg4", rate=_rate(fps))
        except Exception:
            self.container.close()
            raise
        self.stream.width, self.stream.height = self.size
        self.stream.pix_fmt = "yuv420p"
        self._av = av

    def write(self, image: Image.Image) -> None:
        if image.size != self.size:
            canvas = Image.new("RGB", self.size)
            canvas.paste(image, (0, 0))
            image = canvas
        frame = self._av.VideoFrame.from_image(image)
        with writing(self.path):
            for packet in self.stream.encode(frame):
                self.container.mux(packet)

    def close(self) -> None:
        with writing(self.path):
            try:
                for packet in self.stream.encode():
                    self.container.mux(packet)
            finally:
                self.container.close()


def join_lists(lines: Path, path: Path) -> None:
    """Write the JSON lists held one per line in ``lines`` as one JSON list in ``path`` (streamed, then
    renamed into place)."""
    tmp = path.with_name(path.name + ".tmp")
    with writing(path), open(tmp, "w", encoding="utf-8") as out, open(lines, encoding="utf-8") as source:
        out.write("[")
        first = True
        for line in source:
            for item in json.loads(line):
                out.write(("" if first else ",\n") + json.dumps(item))
                first = False
        out.write("]\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


def _segmentations(spool: Path, frames: int):
    """A track's ``segmentations`` items as JSON text: its RLE on the frames it has, null elsewhere."""
    expected = 0
    with open(spool, encoding="utf-8") as lines:
        for line in lines:
            frame, rle = json.loads(line)
            if frame >= frames:
                break
            yield from ["null"] * (frame - expected)
            yield json.dumps(rle)
            expected = frame + 1
    yield from ["null"] * (frames - expected)


def _rate(fps: float) -> Fraction:
    return Fraction(fps).limit_denominator(1001)
