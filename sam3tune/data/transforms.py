"""Image geometry of the official recipe: square resize, random-offset pad, optional flip, normalise.

Train: the image (optionally mirrored first) is resized to ``side x side`` (aspect ratio not
kept) with ``side`` drawn from :func:`train_sides`, then pasted at a random ``(left, top)`` on a
black ``S x S`` canvas. Eval: resized to ``S x S``. Pixels are normalised with mean = std = 0.5
(black padding becomes -1). Boxes become cxcywh normalised by the canvas; masks follow the same
geometry with nearest-neighbour sampling at their own resolution ``M`` (pixel centres of the
``M x M`` target grid are mapped back into the original image).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

OFFICIAL_RESOLUTION = 1008
OFFICIAL_SIDES = tuple(range(480, OFFICIAL_RESOLUTION + 1, 32))  # 480, 512, ..., 992
MIN_BOX_SIDE_PX = 0.01  # a transformed box thinner than this (canvas pixels) counts as empty


@dataclass(frozen=True)
class Geometry:
    """Where the original image lands on the ``resolution``-sided canvas.

    Mirrored left-right first when ``flip``, then resized to ``side x side`` and placed with its
    top-left corner at pixel ``(left, top)``.
    """

    resolution: int
    side: int
    left: int
    top: int
    flip: bool


def train_sides(resolution: int) -> tuple[int, ...]:
    """Resize sides for training: {480, 512, ..., 992} at 1008 px, scaled by ``resolution / 1008``."""
    return tuple(sorted({max(1, round(s * resolution / OFFICIAL_RESOLUTION)) for s in OFFICIAL_SIDES}))


def sample_train_geometry(rng: np.random.Generator, resolution: int, hflip: bool) -> Geometry:
    """Draw side, left, top, flip from ``rng`` in that order (the flip coin is drawn even when off)."""
    sides = train_sides(resolution)
    side = sides[int(rng.integers(len(sides)))]
    left = int(rng.integers(0, resolution - side + 1))
    top = int(rng.integers(0, resolution - side + 1))
    flip = bool(rng.random() < 0.5) and hflip
    return Geometry(resolution, side, left, top, flip)


def eval_geometry(resolution: int) -> Geometry:
    """Square resize to the full canvas, no padding, no flip."""
    return Geometry(resolution, resolution, 0, 0, False)


def transform_image(image: Image.Image, geometry: Geometry) -> torch.Tensor:
    """An RGB image as the ``(3, S, S)`` uint8 canvas (padding black); see :func:`normalize`."""
    if geometry.flip:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    resized = np.asarray(image.resize((geometry.side, geometry.side), Image.Resampling.BILINEAR))
    canvas = np.zeros((3, geometry.resolution, geometry.resolution), dtype=np.uint8)
    rows = slice(geometry.top, geometry.top + geometry.side)
    cols = slice(geometry.left, geometry.left + geometry.side)
    canvas[:, rows, cols] = resized.transpose(2, 0, 1)
    return torch.from_numpy(canvas)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float32 with mean = std = 0.5: ``x / 255 * 2 - 1`` in [-1, 1]."""
    return images.to(torch.float32).div_(127.5).sub_(1.0)


def transform_boxes(boxes: np.ndarray, width: int, height: int, geometry: Geometry) -> torch.Tensor:
    """``(n, 4)`` xyxy pixel boxes of a ``width x height`` image -> ``(n, 4)`` float32 cxcywh in [0, 1]."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x0, y0, x1, y1 = boxes.T
    if geometry.flip:
        x0, x1 = width - x1, width - x0
    sx, sy = geometry.side / width, geometry.side / height
    x0, x1 = x0 * sx + geometry.left, x1 * sx + geometry.left
    y0, y1 = y0 * sy + geometry.top, y1 * sy + geometry.top
    cxcywh = np.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], axis=1) / geometry.resolution
    return torch.from_numpy(np.clip(cxcywh, 0.0, 1.0).astype(np.float32))


def nonempty_boxes(boxes: torch.Tensor, resolution: int) -> torch.Tensor:
    """``(n,)`` bool: cxcywh boxes at least ``MIN_BOX_SIDE_PX`` canvas pixels wide and high."""
    return (boxes[:, 2:] * resolution >= MIN_BOX_SIDE_PX).all(dim=1)


@dataclass(frozen=True)
class MaskSampler:
    """Nearest-neighbour map from the ``M x M`` target grid to original pixels (built per image).

    ``rows`` / ``cols`` hold, for each target row / column, the source row / column;
    ``row_inside`` / ``col_inside`` are False where the target lies in the padding.
    """

    rows: np.ndarray
    cols: np.ndarray
    row_inside: np.ndarray
    col_inside: np.ndarray

    @classmethod
    def build(cls, height: int, width: int, geometry: Geometry, mask_resolution: int) -> MaskSampler:
        centres = (np.arange(mask_resolution) + 0.5) * (geometry.resolution / mask_resolution)
        rows, row_inside = _source_index(centres - geometry.top, geometry.side, height, flip=False)
        cols, col_inside = _source_index(centres - geometry.left, geometry.side, width, flip=geometry.flip)
        return cls(rows, cols, row_inside, col_inside)

    def __call__(self, mask: np.ndarray, top: int = 0, left: int = 0) -> np.ndarray:
        """``(h, w)`` bool window at image pixel (``top``, ``left``) -> ``(M, M)`` bool."""
        out = np.zeros((len(self.rows), len(self.cols)), dtype=bool)
        self.paste(mask, out, top, left)
        return out

    def paste(self, mask: np.ndarray, out: np.ndarray, top: int = 0, left: int = 0) -> bool:
        """Write the resampled window ``mask`` (its pixel (0, 0) is image pixel (``top``, ``left``))
        into the all-False ``(M, M)`` array ``out``; True if any pixel is set.

        Only the target rectangle covering the mask's extent is sampled (cost ~ object size).
        """
        ys = np.flatnonzero(mask.any(axis=1)) + top
        xs = np.flatnonzero(mask.any(axis=0)) + left
        if len(ys) == 0:
            return False
        r = np.flatnonzero(self.row_inside & (self.rows >= ys[0]) & (self.rows <= ys[-1]))
        c = np.flatnonzero(self.col_inside & (self.cols >= xs[0]) & (self.cols <= xs[-1]))
        if len(r) == 0 or len(c) == 0:
            return False
        rows, cols = slice(r[0], r[-1] + 1), slice(c[0], c[-1] + 1)
        region = mask[np.ix_(self.rows[rows] - top, self.cols[cols] - left)]
        out[rows, cols] = region
        return bool(region.any())


def _source_index(offsets: np.ndarray, side: int, size: int, flip: bool) -> tuple[np.ndarray, np.ndarray]:
    inside = (offsets >= 0) & (offsets < side)
    index = np.clip(np.floor(offsets * size / side), 0, size - 1).astype(np.int64)
    return (size - 1 - index if flip else index), inside
