"""Mask decoding: COCO polygon semantics, windowed polygon decode equals full decode, RLE forms."""

from __future__ import annotations

import numpy as np
import pytest
from faster_coco_eval.core import mask as coco_mask

from sam3tune.data.masks import (
    SegmentationError,
    decode_segmentation,
    rle_string_counts,
    validate_segmentation,
)
from sam3tune.data.transforms import Geometry, MaskSampler


def _full(crop, height, width):
    out = np.zeros((height, width), dtype=bool)
    out[crop.top : crop.top + crop.mask.shape[0], crop.left : crop.left + crop.mask.shape[1]] = crop.mask
    return out


def test_rectangle_polygon_covers_the_pixels_inside():
    crop = decode_segmentation([[1, 1, 8, 1, 8, 6, 1, 6]], 10, 12)
    expected = np.zeros((10, 12), dtype=bool)
    expected[1:6, 1:8] = True  # 7 x 5 pixels
    assert np.array_equal(_full(crop, 10, 12), expected)


def test_windowed_polygon_decode_matches_full_image_decode():
    rng = np.random.default_rng(0)
    for _ in range(200):
        height, width = (int(v) for v in rng.integers(5, 60, size=2))
        parts = [
            list(rng.uniform(-5, max(height, width) + 5, size=2 * int(rng.integers(3, 9)))) for _ in range(2)
        ]
        full = coco_mask.decode(coco_mask.merge(coco_mask.frPyObjects(parts, height, width))).astype(bool)
        assert np.array_equal(_full(decode_segmentation(parts, height, width), height, width), full)


def test_windowed_paste_matches_full_paste():
    rng = np.random.default_rng(1)
    geometry = Geometry(64, 40, 7, 19, True)
    sampler = MaskSampler.build(30, 50, geometry, 48)
    for _ in range(20):
        polygon = [list(rng.uniform(0, 50, size=8))]
        crop = decode_segmentation(polygon, 30, 50)
        assert np.array_equal(sampler(crop.mask, crop.top, crop.left), sampler(_full(crop, 30, 50)))


def test_rle_string_parser_matches_the_reference_encoder():
    rng = np.random.default_rng(2)
    for _ in range(100):
        h, w = (int(v) for v in rng.integers(1, 30, size=2))
        mask = rng.random((h, w)) < rng.random()
        counts = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"].decode()
        runs = rle_string_counts(counts)
        assert sum(runs) == h * w
        flat = mask.flatten(order="F")
        assert runs[0] == (np.argmax(flat) if flat.any() else h * w)


def test_validate_rejects_with_kinds():
    assert validate_segmentation([], 4, 4) == (None, 0, False)
    assert validate_segmentation([[]], 4, 4) == (None, 0, False)
    assert validate_segmentation([0, 0, 3, 0, 3, 3], 4, 4) == ([[0.0, 0.0, 3.0, 0.0, 3.0, 3.0]], 0, False)
    with pytest.raises(SegmentationError) as info:
        validate_segmentation({"size": [4, 4], "counts": [3, 3]}, 4, 4)
    assert info.value.kind == "segmentation_malformed"
    with pytest.raises(SegmentationError) as info:
        validate_segmentation({"size": [4, 5], "counts": [20]}, 4, 4)
    assert info.value.kind == "rle_size_mismatch"
