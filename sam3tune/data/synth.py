"""Synthetic demo datasets: coloured shapes on textured backgrounds, in the Roboflow layout.

``generate(SynthConfig(...), out)`` writes ``out/<split>/_annotations.coco.json`` plus JPEGs for
each split. Every object is a filled polygon of one *kind* (a colour + a shape) and its COCO
polygon is exactly the drawn polygon. Categories are predicates over kinds: ``("red", "circle")``
(prompt "red circle") names red circles, ``("any", "circle")`` (prompt "circle") every circle of any
colour. An object is annotated once per category it matches (COCO allows overlapping categories;
each query then has its own copy of the object as a target). By default the kinds drawn are the
categories themselves, one annotation each. Optional extras: distractor kinds that no category
needs to match, and categories that match nothing (``negative_categories``: prompts whose answer
is always "nothing here"). Each image shows a random subset of the kinds (so queries for the
others are negatives), some images show nothing. Output is a pure function of the config: image
``i`` of split number ``s`` draws from ``SeedSequence([seed, s, i])``, so changing one split's size
leaves the other splits unchanged.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from sam3tune.config import ConfigError
from sam3tune.data.layout import ROBOFLOW_ANNOTATIONS
from sam3tune.progress import progress_bar

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
SHAPES = ("circle", "square", "triangle", "star", "hexagon", "cross", "diamond", "heart", "moon")
ANY = "any"
"""Wildcard colour or shape of a category: ``(ANY, "circle")`` names every circle."""

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


Kind = tuple[str, str]
"""An object kind or a category: ``(colour, shape)``; a category may use :data:`ANY` for either."""


@dataclass(frozen=True)
class SynthConfig:
    """What to generate. Sizes are in pixels; ``object_size`` is a fraction of the shorter side."""

    image_size: tuple[int, int] = (256, 256)
    """(width, height) of every image."""
    categories: str | tuple[Kind, ...] = "basic"
    """A preset name (see ``PRESETS``) or (colour, shape) pairs from ``COLOURS`` x ``SHAPES``, either of
    which may be ``ANY``: ``("any", "circle")`` is the category "circle" (circles of every colour)."""
    objects: tuple[Kind, ...] | None = None
    """The (colour, shape) kinds objects are drawn from; None = the categories (which then may not
    use ``ANY``)."""
    distractors: tuple[Kind, ...] = ()
    """Extra kinds drawn with probability ``distractor_fraction`` per object (annotated only under
    the categories they match, if any)."""
    distractor_fraction: float = 0.0
    negative_categories: tuple[str, ...] = ()
    """Names of extra categories that match no object (written without annotations; query them with
    ``DataConfig.keep_unused_categories``)."""
    objects_per_image: tuple[int, int] = (1, 6)
    """Inclusive range of objects drawn per non-empty image (fewer when they do not fit)."""
    categories_per_image: tuple[int, int] = (1, 3)
    """Inclusive range of distinct kinds an image shows (with the default ``objects``: categories)."""
    object_size: tuple[float, float] = (0.12, 0.3)
    """Range of an object's size as a fraction of the shorter image side: the diameter of its
    circumcircle when ``rotate``, else the width of its bounding box (the shape fills the box)."""
    rotate: bool = True
    """Turn each object by a random angle. False draws them upright and axis-aligned (then a square
    and a diamond differ; rotated they are the same shape)."""
    aspect_ratio: tuple[float, float] = (1.0, 1.0)
    """Upright objects only: range of box height / width (drawn log-uniformly)."""
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

    def category_pairs(self) -> tuple[Kind, ...]:
        """The (colour, shape) categories, validated (``ANY`` allowed)."""
        if isinstance(self.categories, str) and self.categories not in PRESETS:
            raise ConfigError(f"unknown preset {self.categories!r}; presets: {', '.join(PRESETS)}")
        pairs = PRESETS[self.categories] if isinstance(self.categories, str) else tuple(self.categories)
        for colour, shape in pairs:
            if colour not in (*COLOURS, ANY) or shape not in (*SHAPES, ANY) or colour == shape == ANY:
                raise ConfigError(
                    f"unknown category ({colour!r}, {shape!r}); colours: {', '.join(COLOURS)}; "
                    f"shapes: {', '.join(SHAPES)}; either (not both) may be {ANY!r}"
                )
        if len(set(pairs)) != len(pairs) or not pairs:
            raise ConfigError(f"categories must be distinct and non-empty, got {pairs}")
        return pairs

    def category_names(self) -> list[str]:
        """Category names in id order: "red circle", "circle" (shape only), "red" (colour only), then
        ``negative_categories``."""
        names = [" ".join(w for w in pair if w != ANY) for pair in self.category_pairs()]
        names += list(self.negative_categories)
        if len(set(names)) != len(names):
            raise ConfigError(f"category names must be distinct, got {names}")
        return names

    def object_kinds(self) -> tuple[Kind, ...]:
        """The kinds objects are drawn from (``objects``, else the categories), validated."""
        kinds = self.category_pairs() if self.objects is None else tuple(self.objects)
        for where, group in (("objects", kinds), ("distractors", self.distractors)):
            for colour, shape in group:
                if colour not in COLOURS or shape not in SHAPES:
                    raise ConfigError(
                        f"unknown {where} kind ({colour!r}, {shape!r}); objects need a colour from "
                        f"{', '.join(COLOURS)} and a shape from {', '.join(SHAPES)}"
                        + ("; set `objects` when categories use 'any'" if self.objects is None else "")
                    )
        if not kinds:
            raise ConfigError("objects must name at least one (colour, shape) kind")
        fraction = self.distractor_fraction
        if not 0.0 <= fraction <= 1.0 or (fraction > 0 and not self.distractors):
            raise ConfigError(
                f"distractor_fraction must be in [0, 1] and needs distractors, got "
                f"{self.distractor_fraction} with {len(self.distractors)} distractor kinds"
            )
        shapes = {shape for _, shape in (*kinds, *self.distractors)}
        if self.rotate and {"square", "diamond"} <= shapes:
            raise ConfigError("square and diamond differ only by rotation: draw both only with rotate=False")
        return kinds


@dataclass
class DrawnObject:
    """One drawn object: its kind, the indices (into ``category_pairs()``) of the categories it
    matches, and its polygon ``[x1, y1, ...]`` in pixels."""

    colour: str
    shape: str
    categories: tuple[int, ...]
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
    """What ``generate`` wrote: images and objects per split, annotations per category name.

    ``objects`` counts drawn objects; an object matching several categories is one object and
    several annotations (``instances``)."""

    images: dict[str, int] = field(default_factory=dict)
    objects: dict[str, int] = field(default_factory=dict)
    instances: dict[str, dict[str, int]] = field(default_factory=dict)


def matching_categories(pairs: tuple[Kind, ...], colour: str, shape: str) -> tuple[int, ...]:
    """Indices of the categories in ``pairs`` that an object of kind (``colour``, ``shape``) matches."""
    return tuple(i for i, (c, s) in enumerate(pairs) if c in (colour, ANY) and s in (shape, ANY))


def render_image(config: SynthConfig, rng: np.random.Generator) -> tuple[Image.Image, list[DrawnObject]]:
    """Draw one image and return it with its objects (all randomness from ``rng``)."""
    width, height = config.image_size
    pairs = config.category_pairs()
    kinds = config.object_kinds()
    image = Image.fromarray(_background(width, height, config.texture_strength, rng))
    if rng.random() < config.empty_fraction:
        return image, []
    low, high = config.categories_per_image
    shown = rng.choice(len(kinds), size=min(len(kinds), int(rng.integers(low, high + 1))), replace=False)
    count = int(rng.integers(config.objects_per_image[0], config.objects_per_image[1] + 1))
    draw = ImageDraw.Draw(image)
    placed: list[tuple[float, float, float, float]] = []
    objects = []
    for index in range(count):
        kind = int(shown[index % len(shown)] if index < len(shown) else rng.choice(shown))
        colour, shape = kinds[kind]
        if config.distractor_fraction > 0 and rng.random() < config.distractor_fraction:
            colour, shape = config.distractors[int(rng.integers(len(config.distractors)))]
        size = float(rng.uniform(*config.object_size)) * min(width, height)
        if config.rotate:
            polygon = _place_rotated(shape, size / 2, width, height, placed, config.allow_overlap, rng)
        else:
            aspect = math.exp(rng.uniform(*np.log(config.aspect_ratio)))
            polygon = _place_upright(shape, size, size * aspect, width, height, placed, config, rng)
        if polygon is None:
            continue
        jitter = rng.integers(-config.colour_jitter, config.colour_jitter + 1, size=3)
        fill = tuple(int(v) for v in np.clip(np.array(COLOURS[colour]) + jitter, 0, 255))
        draw.polygon(polygon, fill=fill)
        objects.append(
            DrawnObject(
                colour,
                shape,
                matching_categories(pairs, colour, shape),
                [round(v, 2) for xy in polygon for v in xy],
            )
        )
    return image, objects


def generate(config: SynthConfig, out: str | Path, progress: bool = True) -> SynthSummary:
    """Write the dataset of ``config`` under ``out`` (Roboflow layout); see module docstring."""
    out = Path(out)
    names = config.category_names()
    config.object_kinds()  # validate before writing anything
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
        drawn = 0
        for index in progress_bar(range(size), desc=f"synth {split}", disable=not progress, leave=False):
            rng = np.random.default_rng(np.random.SeedSequence([config.seed, split_number, index]))
            image, objects = render_image(config, rng)
            file_name = f"{index:06d}.jpg"
            image.save(folder / file_name, quality=config.jpeg_quality)
            images.append({"id": index, "file_name": file_name, "width": image.width, "height": image.height})
            drawn += len(objects)
            for obj in objects:
                for category in obj.categories:
                    annotations.append(
                        {
                            "id": len(annotations) + 1,
                            "image_id": index,
                            "category_id": category + 1,
                            "bbox": [round(v, 2) for v in obj.bbox],
                            "area": round(obj.area, 2),
                            "segmentation": [obj.polygon],
                            "iscrowd": 0,
                        }
                    )
                    counts[names[category]] += 1
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
        summary.objects[split] = drawn
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


def _place_rotated(shape, radius, width, height, placed, allow_overlap, rng, tries: int = 30):
    """Polygon of ``shape`` with circumradius ``radius`` at a free spot, turned by a random angle; the
    spot is recorded in ``placed`` as a circle ``(x, y, radius, 0)``; None when nothing is free."""
    for _ in range(tries):
        x = float(rng.uniform(radius, width - radius))
        y = float(rng.uniform(radius, height - radius))
        if allow_overlap or all(math.hypot(x - px, y - py) > radius + pr + 2 for px, py, pr, _ in placed):
            placed.append((x, y, radius, 0.0))
            radii, turns = _outline(shape)
            angle = float(rng.uniform(0, 2 * math.pi))
            turned = [(radius * r, 2 * math.pi * t + angle) for r, t in zip(radii, turns, strict=True)]
            return [(x + r * math.cos(a), y + r * math.sin(a)) for r, a in turned]
    return None


def _place_upright(shape, box_width, box_height, width, height, placed, config, rng, tries: int = 30):
    """Polygon of upright ``shape`` filling a ``box_width x box_height`` box at a free spot (boxes
    kept 1 px apart); the box is recorded in ``placed`` as ``(x0, y0, x1, y1)``; None when nothing is
    free."""
    box_width, box_height = min(box_width, width), min(box_height, height)
    for _ in range(tries):
        x0 = float(rng.uniform(0, width - box_width))
        y0 = float(rng.uniform(0, height - box_height))
        x1, y1 = x0 + box_width, y0 + box_height
        if config.allow_overlap or all(
            x0 > px1 + 1 or x1 < px0 - 1 or y0 > py1 + 1 or y1 < py0 - 1 for px0, py0, px1, py1 in placed
        ):
            placed.append((x0, y0, x1, y1))
            radii, turns = _outline(shape)
            angle = -math.pi / 2 if shape in _POINT_UP else 0.0
            xs = np.array([r * math.cos(2 * math.pi * t + angle) for r, t in zip(radii, turns, strict=True)])
            ys = np.array([r * math.sin(2 * math.pi * t + angle) for r, t in zip(radii, turns, strict=True)])
            xs = x0 + (xs - xs.min()) / (xs.max() - xs.min()) * box_width
            ys = y0 + (ys - ys.min()) / (ys.max() - ys.min()) * box_height
            return [(float(x), float(y)) for x, y in zip(xs, ys, strict=True)]
    return None


_POINT_UP = ("triangle", "star")  # outlines that start with a vertex at angle 0: turned to point up


def _outline(shape: str) -> tuple[list[float], np.ndarray]:
    """``shape`` in polar form: vertex ``i`` at radius ``radii[i]`` (circumradius 1) and angle
    ``2 pi turns[i]``, with y pointing down (image coordinates)."""
    if shape == "circle":
        return [1.0] * 48, np.arange(48) / 48
    if shape == "square":
        return [1.0] * 4, np.arange(4) / 4 + 1 / 8
    if shape == "diamond":
        return [1.0] * 4, np.arange(4) / 4
    if shape == "triangle":
        return [1.0] * 3, np.arange(3) / 3
    if shape == "hexagon":
        return [1.0] * 6, np.arange(6) / 6
    if shape == "star":
        return [1.0, 0.45] * 5, np.arange(10) / 10
    if shape == "heart":  # the classic parametric heart, point down
        t = np.linspace(0, 2 * math.pi, 40, endpoint=False)
        x = 16 * np.sin(t) ** 3
        y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
        y -= (y.max() + y.min()) / 2  # centre the bounding box
        radii = np.hypot(x, y)
        return list(radii / radii.max()), np.arctan2(y, x) / (2 * math.pi)
    if shape == "moon":  # a crescent: the unit disc minus a disc of radius 0.85 shifted right by 0.5
        meet_x = (1 - 0.85**2 + 0.5**2) / (2 * 0.5)  # where the circles cross: (meet_x, +-meet_y)
        meet_y = math.sqrt(1 - meet_x**2)
        outer_from = math.atan2(meet_y, meet_x)
        inner_from = math.atan2(-meet_y, meet_x - 0.5)
        outer = np.linspace(outer_from, 2 * math.pi - outer_from, 24)  # the long way round, through pi
        inner = np.linspace(inner_from, -2 * math.pi - inner_from, 22)[1:-1]  # back along the inner circle
        x = np.concatenate([np.cos(outer), 0.5 + 0.85 * np.cos(inner)])
        y = np.concatenate([np.sin(outer), 0.85 * np.sin(inner)])
        x -= (x.max() + x.min()) / 2  # centre the bounding box
        radii = np.hypot(x, y)
        return list(radii / radii.max()), np.arctan2(y, x) / (2 * math.pi)
    if shape == "cross":  # a plus sign of arm half-width 0.35
        a = 0.35
        corners = [(a, 1), (a, a), (1, a), (1, -a), (a, -a), (a, -1),
                   (-a, -1), (-a, -a), (-1, -a), (-1, a), (-a, a), (-a, 1)]  # fmt: skip
        return [math.hypot(x, y) for x, y in corners], np.array(
            [math.atan2(y, x) / (2 * math.pi) for x, y in corners]
        )
    raise ValueError(f"unknown shape {shape!r}")
