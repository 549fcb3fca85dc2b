"""Synthetic demo datasets: coloured shapes on textured backgrounds, in the Roboflow layout.

``generate(SynthConfig(...), out)`` writes ``out/<split>/_annotations.coco.json`` plus JPEGs for
each split. Every object is a filled polygon of one category (a colour + a shape, prompt e.g.
"red circle") and its COCO polygon is exactly the drawn polygon. Each image shows a random subset
of the categories (so queries for the others are negatives), some images show nothing. Output is
a pure function of the config: image ``i`` of split number ``s`` draws from
``SeedSequence([seed, s, i])``, so changing one split's size leaves the other splits unchanged.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from sam3tune.data.layout import ROBOFLOW_ANNOTATIONS

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 70, 220),
    "yellow": (235, 215, 40),
    "orange": (245, 140, 30),
    "purple": (140, 50, 180),
    "cyan": (40, 200, 210),
    "pink": (240, 120, 190),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
SHAPES = ("circle", "square", "triangle", "star", "hexagon", "cross")

PRESETS: dict[str, tuple[tuple[str, str], ...]] = {
    # four categories that differ in colour and shape: the easiest task
    "basic": (("red", "circle"), ("blue", "triangle"), ("green", "square"), ("yellow", "star")),
    # same shape, the colour word decides
    "colours": (("red", "circle"), ("blue", "circle"), ("green", "circle"), ("yellow", "circle")),
    # same colour, the shape word decides
    "shapes": (("red", "circle"), ("red", "triangle"), ("red", "square"), ("red", "star")),
    # both words matter: a red square is a negative for "red circle" and for "blue square"
    "binding": (("red", "circle"), ("red", "square"), ("blue", "circle"), ("blue", "square")),
}


@dataclass(frozen=True)
class SynthConfig:
    """What to generate. Sizes are in pixels; ``object_size`` is a fraction of the shorter side."""

    image_size: tuple[int, int] = (256, 256)
    """(width, height) of every image."""
    categories: str | tuple[tuple[str, str], ...] = "basic"
    """A preset name (see ``PRESETS``) or (colour, shape) pairs from ``COLOURS`` x ``SHAPES``."""
    objects_per_image: tuple[int, int] = (1, 6)
    """Inclusive range of objects drawn per non-empty image (fewer when they do not fit)."""
    categories_per_image: tuple[int, int] = (1, 3)
    """Inclusive range of distinct categories an image shows (the others are its negatives)."""
    object_size: tuple[float, float] = (0.12, 0.3)
    """Range of an object's diameter as a fraction of the shorter image side."""
    texture_strength: float = 0.5
    """0 = flat background; 1 = strong blotches and grain."""
    colour_jitter: int = 20
    """Maximum per-channel deviation of an object's colour from its named colour."""
    empty_fraction: float = 0.05
    """Fraction of images with no object at all (every query on them is negative)."""
    allow_overlap: bool = False
    """Let objects overlap (masks then include hidden parts); off keeps masks exact."""
    splits: tuple[tuple[str, int], ...] = (("train", 64), ("valid", 16), ("test", 16))
    """(split name, number of images) in Roboflow folder names."""
    seed: int = 0
    placeholder_category: bool = True
    """Write Roboflow's placeholder category 0 (named after the project) as real exports do."""
    project: str = "synthetic-shapes"
    jpeg_quality: int = 92

    def category_pairs(self) -> tuple[tuple[str, str], ...]:
        """The (colour, shape) pairs, validated."""
        if isinstance(self.categories, str) and self.categories not in PRESETS:
            raise ValueError(f"unknown preset {self.categories!r}; presets: {', '.join(PRESETS)}")
        pairs = PRESETS[self.categories] if isinstance(self.categories, str) else tuple(self.categories)
        for colour, shape in pairs:
            if colour not in COLOURS or shape not in SHAPES:
                raise ValueError(
                    f"unknown category ({colour!r}, {shape!r}); "
                    f"colours: {', '.join(COLOURS)}; shapes: {', '.join(SHAPES)}"
                )
        if len(set(pairs)) != len(pairs) or not pairs:
            raise ValueError(f"categories must be distinct and non-empty, got {pairs}")
        return pairs


@dataclass
class DrawnObject:
    """One drawn object: category index into ``category_pairs()``, polygon ``[x1, y1, ...]`` in pixels."""

    category: int
    polygon: list[float]

    @property
    def bbox(self) -> list[float]:
        xs, ys = self.polygon[0::2], self.polygon[1::2]
        return [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]

    @property
    def area(self) -> float:
        xs, ys = np.array(self.polygon[0::2]), np.array(self.polygon[1::2])
        return float(abs(np.dot(xs, np.roll(ys, -1)) - np.dot(ys, np.roll(xs, -1))) / 2)


@dataclass
class SynthSummary:
    """What ``generate`` wrote: images and objects per split, instances per category name."""

    images: dict[str, int] = field(default_factory=dict)
    objects: dict[str, int] = field(default_factory=dict)
    instances: dict[str, dict[str, int]] = field(default_factory=dict)


def render_image(config: SynthConfig, rng: np.random.Generator) -> tuple[Image.Image, list[DrawnObject]]:
    """Draw one image and return it with its objects (all randomness from ``rng``)."""
    width, height = config.image_size
    pairs = config.category_pairs()
    image = Image.fromarray(_background(width, height, config.texture_strength, rng))
    if rng.random() < config.empty_fraction:
        return image, []
    low, high = config.categories_per_image
    shown = rng.choice(len(pairs), size=min(len(pairs), int(rng.integers(low, high + 1))), replace=False)
    count = int(rng.integers(config.objects_per_image[0], config.objects_per_image[1] + 1))
    draw = ImageDraw.Draw(image)
    placed: list[tuple[float, float, float]] = []
    objects = []
    for index in range(count):
        category = int(shown[index % len(shown)] if index < len(shown) else rng.choice(shown))
        radius = float(rng.uniform(*config.object_size)) * min(width, height) / 2
        centre = _place(radius, width, height, placed, config.allow_overlap, rng)
        if centre is None:
            continue
        placed.append((*centre, radius))
        colour, shape = pairs[category]
        polygon = _shape_polygon(shape, centre, radius, float(rng.uniform(0, 2 * math.pi)))
        jitter = rng.integers(-config.colour_jitter, config.colour_jitter + 1, size=3)
        fill = tuple(int(v) for v in np.clip(np.array(COLOURS[colour]) + jitter, 0, 255))
        draw.polygon(polygon, fill=fill)
        objects.append(DrawnObject(category, [round(v, 2) for xy in polygon for v in xy]))
    return image, objects


def generate(config: SynthConfig, out: str | Path, progress: bool = True) -> SynthSummary:
    """Write the dataset of ``config`` under ``out`` (Roboflow layout); see module docstring."""
    out = Path(out)
    pairs = config.category_pairs()
    names = [f"{colour} {shape}" for colour, shape in pairs]
    categories = [
        {"id": i + 1, "name": name, "supercategory": config.project} for i, name in enumerate(names)
    ]
    if config.placeholder_category:
        categories.insert(0, {"id": 0, "name": config.project, "supercategory": "none"})
    summary = SynthSummary()
    for split_number, (split, size) in enumerate(config.splits):
        folder = out / split
        folder.mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        counts = dict.fromkeys(names, 0)
        for index in tqdm(range(size), desc=f"synth {split}", disable=not progress, leave=False):
            rng = np.random.default_rng(np.random.SeedSequence([config.seed, split_number, index]))
            image, objects = render_image(config, rng)
            file_name = f"{index:06d}.jpg"
            image.save(folder / file_name, quality=config.jpeg_quality)
            images.append({"id": index, "file_name": file_name, "width": image.width, "height": image.height})
            for obj in objects:
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": index,
                        "category_id": obj.category + 1,
                        "bbox": [round(v, 2) for v in obj.bbox],
                        "area": round(obj.area, 2),
                        "segmentation": [obj.polygon],
                        "iscrowd": 0,
                    }
                )
                counts[names[obj.category]] += 1
        coco = {
            "info": {
                "description": f"{config.project}: synthetic shapes made by sam3tune",
                "seed": config.seed,
            },
            "categories": categories,
            "images": images,
            "annotations": annotations,
        }
        (folder / ROBOFLOW_ANNOTATIONS).write_text(json.dumps(coco))
        summary.images[split] = len(images)
        summary.objects[split] = len(annotations)
        summary.instances[split] = counts
    return summary


def _background(width: int, height: int, strength: float, rng: np.random.Generator) -> np.ndarray:
    """A muted base colour with low-frequency blotches and per-pixel grain, ``(h, w, 3)`` uint8."""
    base = rng.uniform(70, 170, size=3).astype(np.float32)
    cells = rng.integers(0, 256, size=(max(2, height // 32), max(2, width // 32), 3), dtype=np.uint8)
    blotches = np.asarray(
        Image.fromarray(cells).resize((width, height), Image.Resampling.BICUBIC), np.float32
    )
    grain = rng.standard_normal(size=(height, width, 1), dtype=np.float32)
    pixels = base + strength * (0.5 * (blotches - 128.0) + 18.0 * grain)
    return np.clip(pixels, 0, 255, out=pixels).astype(np.uint8)


def _place(radius, width, height, placed, allow_overlap, rng, tries: int = 30):
    for _ in range(tries):
        x = float(rng.uniform(radius, width - radius))
        y = float(rng.uniform(radius, height - radius))
        if allow_overlap or all(math.hypot(x - px, y - py) > radius + pr + 2 for px, py, pr in placed):
            return x, y
    return None


def _shape_polygon(
    shape: str, centre: tuple[float, float], radius: float, angle: float
) -> list[tuple[float, float]]:
    """Vertices of ``shape`` with circumradius ``radius`` around ``centre``, rotated by ``angle``."""
    if shape == "circle":
        radii, turns = [radius] * 48, np.arange(48) / 48
    elif shape == "square":
        radii, turns = [radius] * 4, np.arange(4) / 4 + 1 / 8
    elif shape == "triangle":
        radii, turns = [radius] * 3, np.arange(3) / 3
    elif shape == "hexagon":
        radii, turns = [radius] * 6, np.arange(6) / 6
    elif shape == "star":
        radii, turns = [radius, 0.45 * radius] * 5, np.arange(10) / 10
    else:  # cross: a plus sign of arm half-width 0.35 r
        a = 0.35 * radius
        corners = [(a, radius), (a, a), (radius, a), (radius, -a), (a, -a), (a, -radius),
                   (-a, -radius), (-a, -a), (-radius, -a), (-radius, a), (-a, a), (-a, radius)]  # fmt: skip
        radii = [math.hypot(x, y) for x, y in corners]
        turns = np.array([math.atan2(y, x) / (2 * math.pi) for x, y in corners])
    cx, cy = centre
    return [
        (cx + r * math.cos(2 * math.pi * t + angle), cy + r * math.sin(2 * math.pi * t + angle))
        for r, t in zip(radii, turns, strict=True)
    ]
