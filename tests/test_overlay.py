import numpy as np
import pytest
from PIL import Image

from sam3tune.eval.postprocess import Detections
from sam3tune.eval.rle import encode_masks
from sam3tune.overlay import draw_overlay, prompt_colour


def test_overlay_colours_mask_pixels_and_keeps_size():
    h, w = 60, 90
    image = Image.new("RGB", (w, h), (128, 128, 128))
    mask = np.zeros((1, h, w), dtype=bool)
    mask[0, 30:50, 40:80] = True
    dets = Detections(
        image_size=(h, w),
        scores=np.array([0.87], dtype=np.float32),
        boxes=np.array([[40, 30, 80, 50]], dtype=np.float32),
        masks=encode_masks(mask),
    )
    empty = Detections((h, w), np.zeros(0, np.float32), np.zeros((0, 4), np.float32), [])
    out = draw_overlay(image, [("empty", empty), ("date", dets)], mask_alpha=0.5)
    assert out.size == image.size and out.mode == "RGB"
    pixels = np.asarray(out).astype(int)
    expected = np.round(0.5 * 128 + 0.5 * np.array(prompt_colour(1))).astype(int)
    inner = pixels[35:47, 45:75]  # inside the mask, away from box outline and label
    assert (np.abs(inner - expected) <= 1).all()
    assert (pixels[:10, :30] == 128).all()  # far from any detection: untouched
    # the label sits above the box, filled with the prompt's colour
    assert (pixels[18:29, 40:60] == prompt_colour(1)).all(axis=-1).any()


def test_overlay_rejects_detections_of_another_image():
    dets = Detections(
        (10, 10),
        np.array([0.5], np.float32),
        np.zeros((1, 4), np.float32),
        encode_masks(np.ones((1, 10, 10), bool)),
    )
    with pytest.raises(ValueError, match="size"):
        draw_overlay(Image.new("RGB", (20, 10)), [("x", dets)])
