"""Synthetic videos of the demo's shapes: objects that move, pass in front of each other, enter and leave.

``generate_videos(VideoSynthConfig(scene=...), out)`` writes, for each video, its frames as JPEGs in
``out/JPEGImages/<video>/<frame>.jpg`` and, with PyAV installed, ``out/videos/<video>.mp4``, plus:

* ``out/annotations.json``: YouTube-VIS ground truth (``videos`` with ``file_names`` relative to
  ``JPEGImages/``; one annotation per object *track* with ``segmentations`` / ``bboxes`` / ``areas`` per
  frame, null where the object is not visible);
* ``out/frames.coco.json``: the same objects frame by frame as COCO (``file_name`` relative to ``out``), so
  the detector can be scored per frame with ``sam3tune eval`` like any image set.

The look of a scene (kinds, categories, colours, sizes, background) is a :class:`~sam3tune.data.synth.
SynthConfig`. Each object keeps its kind and size, moves in a straight line at a constant speed (so it may
drift out of view: an exit, or into view: an entry), and some objects appear or vanish mid-video (entries
and exits inside the frame). Objects are drawn in a fixed depth order; a mask is the object's *visible*
part, so an object passing behind another loses those pixels (occlusion), and one hidden entirely, or
outside the frame, has no mask on that frame. Objects of distractor kinds are drawn (and occlude) but
belong to no category. Output is a pure function of the config: video ``v`` draws from
``SeedSequence([seed, v])``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from sam3tune.data.synth import COLOURS, SynthConfig, _background, _outline, matching_categories
from sam3tune.progress import progress_bar

MIN_VISIBLE_PIXELS = 4  # a visible part smaller than this counts as not visible


@dataclass(frozen=True)
class VideoSynthConfig:
    """What to generate: ``videos`` clips of ``frames`` (inclusive range) frames, each with
    ``objects_per_video`` objects (at least one of a category's kinds) moving at ``speed`` pixels per
    frame; ``appear_fraction`` of the objects enter or leave by appearing / vanishing mid-video."""

    scene: SynthConfig = field(default_factory=SynthConfig)
    videos: int = 4
    frames: tuple[int, int] = (30, 60)
    objects_per_video: tuple[int, int] = (2, 4)
    speed: tuple[float, float] = (0.3, 1.2)
    appear_fraction: float = 0.5
    fps: float = 10.0
    seed: int = 0
    mp4: bool = True  # also write videos/<video>.mp4 when PyAV is installed


@dataclass
class _Mover:
    colour: str
    shape: str
    categories: tuple[int, ...]
    fill: tuple[int, int, int]
    outline: np.ndarray  # (K, 2) vertices in [0, 1]^2 of the object's box
    size: tuple[float, float]  # box width, height
    start: tuple[float, float]  # box top-left at frame 0
    velocity: tuple[float, float]
    shown: tuple[int, int]  # frames [first, last) it is drawn

    def polygon(self, t: int) -> list[tuple[float, float]]:
        x = self.start[0] + self.velocity[0] * t
        y = self.start[1] + self.velocity[1] * t
        return [(x + u * self.size[0], y + v * self.size[1]) for u, v in self.outline]


def generate_videos(config: VideoSynthConfig, out: str | Path, progress: bool = True) -> dict:
    """Write the videos of ``config`` under ``out`` (module docstring); returns the ground truth dict."""
    out = Path(out)
    scene = config.scene
    names = scene.category_names()
    width, height = scene.image_size
    videos, annotations, images, frame_annotations = [], [], [], []
    for v in progress_bar(range(config.videos), desc="synth video", disable=not progress, leave=False):
        rng = np.random.default_rng(np.random.SeedSequence([config.seed, v]))
        length = int(rng.integers(config.frames[0], config.frames[1] + 1))
        background = _background(width, height, scene.texture_strength, rng)
        movers = _movers(config, length, rng)
        name = f"video{v:03d}"
        folder = out / "JPEGImages" / name
        folder.mkdir(parents=True, exist_ok=True)
        tracks = {k: [] for k, m in enumerate(movers) if m.categories}
        file_names, frames = [], []
        for t in range(length):
            frame, visible = _render(background, movers, t)
            file_name = f"{name}/{t:05d}.jpg"
            frame.save(out / "JPEGImages" / file_name, quality=scene.jpeg_quality)
            file_names.append(file_name)
            frames.append(frame)
            image_id = len(images) + 1
            images.append(
                {"id": image_id, "file_name": f"JPEGImages/{file_name}", "width": width, "height": height}
            )
            for k in tracks:
                mask = visible[k]
                tracks[k].append(mask if mask is not None and mask.sum() >= MIN_VISIBLE_PIXELS else None)
                if tracks[k][-1] is not None:
                    for category in movers[k].categories:
                        frame_annotations.append(
                            {
                                "id": len(frame_annotations) + 1,
                                "image_id": image_id,
                                "category_id": category + 1,
                                "iscrowd": 0,
                                **_mask_fields(tracks[k][-1]),
                            }
                        )
        video_id = v + 1
        videos.append(
            {
                "id": video_id,
                "name": name,
                "file_names": file_names,
                "width": width,
                "height": height,
                "length": length,
            }
        )
        for k, masks in tracks.items():
            fields_ = [_mask_fields(m) if m is not None else None for m in masks]
            for category in movers[k].categories:
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "video_id": video_id,
                        "category_id": category + 1,
                        "iscrowd": 0,
                        "width": width,
                        "height": height,
                        "length": length,
                        "segmentations": [f["segmentation"] if f else None for f in fields_],
                        "bboxes": [f["bbox"] if f else None for f in fields_],
                        "areas": [f["area"] if f else None for f in fields_],
                    }
                )
        if config.mp4:
            _write_mp4(frames, out / "videos" / f"{name}.mp4", config.fps)
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(names)]
    info = {"description": f"{scene.project}: synthetic videos made by sam3tune", "seed": config.seed}
    truth = {"info": info, "videos": videos, "categories": categories, "annotations": annotations}
    (out / "annotations.json").write_text(json.dumps(truth), encoding="utf-8")
    coco = {"info": info, "images": images, "categories": categories, "annotations": frame_annotations}
    (out / "frames.coco.json").write_text(json.dumps(coco), encoding="utf-8")
    return truth


def _movers(config: VideoSynthConfig, length: int, rng: np.random.Generator) -> list[_Mover]:
    scene = config.scene
    pairs, kinds = scene.category_pairs(), scene.object_kinds()
    width, height = scene.image_size
    count = int(rng.integers(config.objects_per_video[0], config.objects_per_video[1] + 1))
    movers = []
    for index in range(count):
        colour, shape = kinds[int(rng.integers(len(kinds)))]
        if index > 0 and scene.distractor_fraction > 0 and rng.random() < scene.distractor_fraction:
            colour, shape = scene.distractors[int(rng.integers(len(scene.distractors)))]
        side = float(rng.uniform(*scene.object_size)) * min(width, height)
        aspect = math.exp(rng.uniform(*np.log(scene.aspect_ratio)))
        size = (side, side * aspect)
        speed = float(rng.uniform(*config.speed))
        angle = float(rng.uniform(0, 2 * math.pi))
        velocity = (speed * math.cos(angle), speed * math.sin(angle))
        # start so that the middle of the path is inside the frame
        middle = (rng.uniform(0, width - size[0]), rng.uniform(0, height - size[1]))
        start = (middle[0] - velocity[0] * length / 2, middle[1] - velocity[1] * length / 2)
        shown = (0, length)
        if rng.random() < config.appear_fraction:
            first = int(rng.integers(0, length // 2))
            last = int(rng.integers(length // 2 + 1, length + 1))
            shown = (first, last)
        jitter = rng.integers(-scene.colour_jitter, scene.colour_jitter + 1, size=3)
        fill = tuple(int(c) for c in np.clip(np.array(COLOURS[colour]) + jitter, 0, 255))
        movers.append(
            _Mover(
                colour,
                shape,
                matching_categories(pairs, colour, shape),
                fill,
                _unit_outline(shape),
                size,
                start,
                velocity,
                shown,
            )
        )
    return movers


def _unit_outline(shape: str) -> np.ndarray:
    """``shape`` upright (triangles and stars point up), its box scaled to the unit square."""
    radii, turns = _outline(shape)
    angle = -math.pi / 2 if shape in ("triangle", "star") else 0.0
    xs = np.array([r * math.cos(2 * math.pi * t + angle) for r, t in zip(radii, turns, strict=True)])
    ys = np.array([r * math.sin(2 * math.pi * t + angle) for r, t in zip(radii, turns, strict=True)])
    return np.stack([(xs - xs.min()) / np.ptp(xs), (ys - ys.min()) / np.ptp(ys)], axis=1)


def _render(
    background: np.ndarray, movers: list[_Mover], t: int
) -> tuple[Image.Image, list[np.ndarray | None]]:
    """Frame ``t`` and each object's visible mask (None when it is not drawn on this frame)."""
    height, width = background.shape[:2]
    image = Image.fromarray(background)
    draw = ImageDraw.Draw(image)
    drawn: list[np.ndarray | None] = []
    for mover in movers:
        if not mover.shown[0] <= t < mover.shown[1]:
            drawn.append(None)
            continue
        polygon = mover.polygon(t)
        draw.polygon(polygon, fill=mover.fill)
        mask = Image.new("L", (width, height))
        ImageDraw.Draw(mask).polygon(polygon, fill=1)
        drawn.append(np.asarray(mask, dtype=bool))
    visible: list[np.ndarray | None] = []
    for k, mask in enumerate(drawn):
        if mask is not None:
            for above in drawn[k + 1 :]:
                if above is not None:
                    mask = mask & ~above
        visible.append(mask)
    return image, visible


def _mask_fields(mask: np.ndarray) -> dict:
    from faster_coco_eval.core import mask as coco_mask

    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return {
        "segmentation": {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode()},
        "bbox": [
            float(cols[0]),
            float(rows[0]),
            float(cols[-1] + 1 - cols[0]),
            float(rows[-1] + 1 - rows[0]),
        ],
        "area": float(mask.sum()),
    }


def _write_mp4(frames: list[Image.Image], path: Path, fps: float) -> None:
    try:
        import av
    except ImportError:
        return
    from fractions import Fraction

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        width, height = frames[0].size
        stream.width, stream.height = width + width % 2, height + height % 2
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            canvas = Image.new("RGB", (stream.width, stream.height))
            canvas.paste(frame)
            for packet in stream.encode(av.VideoFrame.from_image(canvas)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
