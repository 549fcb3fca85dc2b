"""Transform geometry: the official side set, sampling ranges, flips, mask sampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sam3tune.data.transforms import (
    Geometry,
    MaskSampler,
    eval_geometry,
    nonempty_boxes,
    normalize,
    sample_train_geometry,
    train_sides,
    transform_boxes,
    transform_image,
)


def test_official_sides_at_1008():
    assert train_sides(1008) == (
        480,
        512,
        544,
        576,
        608,
        640,
        672,
        704,
        736,
        768,
        800,
        832,
        864,
        896,
        928,
        960,
        992,
    )


def test_sides_scale_with_the_resolution():
    assert train_sides(504) == tuple(sorted({round(s / 2) for s in train_sides(1008)}))
    assert train_sides(504)[0] == 240 and train_sides(504)[-1] == 496
    assert max(train_sides(64)) < 64 and min(train_sides(64)) == 30


@pytest.mark.parametrize("hflip", [False, True])
def test_sampled_geometry_ranges(hflip):
    rng = np.random.default_rng(0)
    draws = [sample_train_geometry(rng, 128, hflip) for _ in range(400)]
    sides = train_sides(128)
    assert {g.side for g in draws} == set(sides)  # every side is reachable
    assert all(0 <= g.left <= 128 - g.side and 0 <= g.top <= 128 - g.side for g in draws)
    flips = sum(g.flip for g in draws)
    assert (flips == 0) if not hflip else (150 < flips < 250)


def test_hflip_flag_does_not_change_side_and_offsets():
    on = [sample_train_geometry(np.random.default_rng(s), 64, True) for s in range(20)]
    off = [sample_train_geometry(np.random.default_rng(s), 64, False) for s in range(20)]
    assert [(g.side, g.left, g.top) for g in on] == [(g.side, g.left, g.top) for g in off]


def test_flip_mirrors_boxes_inside_the_pasted_image():
    boxes = np.array([[0.0, 0.0, 10.0, 5.0]])  # top-left corner of a 40 x 20 image
    plain = transform_boxes(boxes, 40, 20, Geometry(100, 50, 10, 20, False))
    flipped = transform_boxes(boxes, 40, 20, Geometry(100, 50, 10, 20, True))
    # plain: x 0..10 -> 10..22.5; flipped: x 30..40 -> 47.5..60; y 0..5 -> 20..32.5
    torch.testing.assert_close(plain, torch.tensor([[0.1625, 0.2625, 0.125, 0.125]]))
    torch.testing.assert_close(flipped, torch.tensor([[0.5375, 0.2625, 0.125, 0.125]]))


def test_eval_mask_sampling_is_exact_for_integer_upscale():
    mask = np.zeros((4, 6), dtype=bool)
    mask[1, 2] = mask[3, 5] = True
    sampler = MaskSampler.build(4, 6, Geometry(12, 12, 0, 0, False), 12)  # 6 -> 12 wide, 4 -> 12 high
    out = sampler(mask)
    expected = np.repeat(np.repeat(mask, 3, axis=0), 2, axis=1)
    assert np.array_equal(out, expected)


def test_mask_sampling_with_flip_and_padding():
    mask = np.zeros((2, 2), dtype=bool)
    mask[0, 0] = True  # top-left
    out = MaskSampler.build(2, 2, Geometry(8, 4, 2, 0, True), 8)(mask)
    expected = np.zeros((8, 8), dtype=bool)
    expected[0:2, 4:6] = True  # mirrored to the top-right of the 4 x 4 image pasted at x = 2
    assert np.array_equal(out, expected)


def test_image_canvas_and_normalisation():
    image = Image.fromarray(np.full((10, 20, 3), 255, dtype=np.uint8))
    canvas = transform_image(image, Geometry(16, 8, 4, 2, False))
    assert canvas.shape == (3, 16, 16) and canvas.dtype == torch.uint8
    assert int(canvas.sum()) == 255 * 3 * 8 * 8
    assert canvas[:, 2:10, 4:12].eq(255).all()
    values = normalize(canvas)
    assert values.min().item() == -1.0 and values.max().item() == 1.0
    assert eval_geometry(16) == Geometry(16, 16, 0, 0, False)


def test_boxes_that_become_empty_are_flagged():
    boxes = transform_boxes(np.array([[0, 0, 1e-4, 5], [0, 0, 5, 5]]), 100, 100, eval_geometry(64))
    assert nonempty_boxes(boxes, 64).tolist() == [False, True]
