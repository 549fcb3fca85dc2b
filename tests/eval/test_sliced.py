"""Sliced prediction: tiles mapped back to the whole image, duplicates across borders merged, masks
written straight into the whole image's RLE; through Predictor, `predict` and `eval`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from sam3tune.config import ConfigError, load_config
from sam3tune.eval.config import PostprocessConfig, SlicingConfig
from sam3tune.eval.postprocess import Detections
from sam3tune.eval.rle import decode_masks
from sam3tune.eval.sliced import merge_detections, region_mask_rle
from sam3tune.predict import Predictor
from sam3tune.predict.config import PredictConfig
from tests.data.conftest import word_tokenize

QUERIES = 3


class BrightSquareModel(nn.Module):
    """An oracle on pixels: for every query whose prompt is one word, query 0 finds the bounding box of
    the canvas' bright pixels (mask = those pixels); nothing otherwise. Counts the canvases it sees."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.canvases = 0

    def forward(self, pixel_values, image_index, input_ids, attention_mask, **_):
        queries, side = image_index.shape[0], pixel_values.shape[-1]
        self.canvases += pixel_values.shape[0]
        logits = torch.full((queries, QUERIES), -20.0)
        boxes = torch.full((queries, QUERIES, 4), 0.5)
        masks = torch.full((queries, QUERIES, side, side), -20.0)
        for q, row in enumerate(image_index.tolist()):
            bright = pixel_values[row, 0] > 0.5
            if not bright.any() or attention_mask[q].sum() != 1:
                continue
            ys, xs = torch.nonzero(bright, as_tuple=True)
            x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
            boxes[q, 0] = torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0]).float() / side
            logits[q, 0] = 20.0
            masks[q, 0] = torch.where(bright, 20.0, -20.0)
        return {
            "pred_logits": logits,
            "pred_boxes": boxes,
            "presence_logits": torch.full((queries, 1), 20.0),
            "pred_masks": masks,
        }


class QuerySizeModel(BrightSquareModel):
    """:class:`BrightSquareModel` that records the queries of each forward pass."""

    def __init__(self):
        super().__init__()
        self.queries_per_forward = []

    def forward(self, pixel_values, image_index, input_ids, attention_mask, **rest):
        self.queries_per_forward.append(image_index.shape[0])
        return super().forward(pixel_values, image_index, input_ids, attention_mask, **rest)


def _image(tmp_path, squares, size=(200, 200), name="scene.png"):
    pixels = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    for x0, y0, x1, y1 in squares:
        pixels[y0:y1, x0:x1] = 255
    path = tmp_path / name
    Image.fromarray(pixels).save(path)
    return path


def _predictor(**tiling):
    config = PostprocessConfig(score_threshold=0.5, tiling=SlicingConfig(**tiling))
    return Predictor(BrightSquareModel(), word_tokenize, image_size=64, config=config, device="cpu")


def test_one_object_across_four_tiles_gives_one_detection_with_its_box_and_mask(tmp_path):
    # 64 px tiles every 48 px: x and y starts 0, 48, 96, 136; the square [80, 120)^2 is cut by the
    # borders at 112 (tile 48) and 96 (tile 96) both ways: four tiles each see a different part of it
    path = _image(tmp_path, [(80, 80, 120, 120)])
    predictor = _predictor(size=64, overlap=0.25, full_image=False)
    found = predictor.predict(path, ["square"])["square"]
    assert len(found) == 1
    np.testing.assert_allclose(found.boxes[0], [80, 80, 120, 120], atol=1e-4)
    mask = found.mask_array()[0]
    expected = np.zeros((200, 200), dtype=bool)
    expected[80:120, 80:120] = True
    np.testing.assert_array_equal(mask, expected)
    assert predictor.model.canvases == 16  # 4 x 4 tiles, no whole-image pass
    # merging against the kept box only (no growing union) leaves the far corner apart: 2 detections
    parts = [
        Detections((200, 200), np.array([0.9], np.float32), np.array([b], np.float32))
        for b in ([80, 80, 112, 112], [96, 80, 120, 112], [80, 96, 112, 120], [96, 96, 120, 120])
    ]
    merged = merge_detections(parts, PostprocessConfig(tiling=SlicingConfig(size=64)))
    assert len(merged) == 1 and merged.boxes[0].tolist() == [80, 80, 120, 120]


def _parts(*views):
    """``Detections`` of a 200 x 200 image, one per ``(score, box)``."""
    return [
        Detections((200, 200), np.array([score], np.float32), np.array([box], np.float32))
        for score, box in views
    ]


def _merged(views, regions):
    merged = merge_detections(_parts(*views), PostprocessConfig(tiling=SlicingConfig(size=64)), regions)
    return sorted((round(float(s), 2), b.tolist()) for s, b in zip(merged.scores, merged.boxes, strict=True))


def test_a_cut_part_joins_the_whole_view_of_its_object():
    # tile (0, 0, 64, 64) sees [40, 10, 60, 30] whole; tile (48, 0, 112, 64) only its part right of x=48
    views = [(0.6, [40, 10, 60, 30]), (0.9, [48, 10, 60, 30])]
    assert _merged(views, [(0, 0, 64, 64), (48, 0, 112, 64)]) == [(0.9, [40, 10, 60, 30])]


def test_a_small_whole_view_inside_a_large_detection_does_not_take_it_over():
    # the whole-image pass finds a large object; a tile fires (higher) on a small piece of it, whole in
    # the tile: two detections, the large box kept (merging by intersection over the smaller box kept
    # only the small one)
    views = [(0.9, [30, 30, 40, 40]), (0.7, [20, 20, 180, 180])]
    assert _merged(views, [(0, 0, 64, 64), None]) == [(0.7, [20, 20, 180, 180]), (0.9, [30, 30, 40, 40])]


def test_neighbours_do_not_merge_through_a_larger_box_overlapping_both():
    views = [(0.9, [10, 10, 20, 20]), (0.8, [30, 10, 40, 20]), (0.7, [5, 5, 45, 25])]
    assert len(_merged(views, [(0, 0, 64, 64)] * 3)) == 3


def test_separate_objects_stay_separate_and_whole_image_pass_adds_large_ones(tmp_path):
    squares = [(10, 10, 20, 20), (70, 10, 80, 20), (150, 150, 190, 190)]  # never two in one tile
    path = _image(tmp_path, squares)
    found = _predictor(size=64, overlap=0.25, full_image=False).predict(path, ["square"])["square"]
    boxes = sorted(found.boxes.round().astype(int).tolist())
    assert boxes == [[10, 10, 20, 20], [70, 10, 80, 20], [150, 150, 190, 190]]
    # multi-word prompts find nothing in this model: no detection from any tile
    assert len(_predictor(size=64, overlap=0.25).predict(path, ["big square"])["big square"]) == 0


def test_whole_image_pass_mask_stays_inside_its_box_and_merges_with_the_tiles(tmp_path):
    path = _image(tmp_path, [(20, 20, 180, 180)])  # larger than a tile
    predictor = _predictor(size=64, overlap=0.25, full_image=True)
    found = predictor.predict(path, ["square"])["square"]
    assert len(found) == 1
    np.testing.assert_allclose(found.boxes[0], [20, 20, 180, 180], atol=1e-4)
    mask = found.mask_array()[0]
    assert mask[20:180, 20:180].all() and mask.sum() == 160 * 160
    assert predictor.model.canvases == 16 + 1


def test_region_mask_equals_upsampling_the_logits_to_the_region():
    logits = torch.randn(16, 16) * 3
    region, size = (30, 20, 130, 70), (90, 150)  # logits cover 100 x 50 px at (30, 20) of a 150 x 90 image
    up = F.interpolate(logits[None, None], size=(50, 100), mode="bilinear", align_corners=False)[0, 0] > 0
    expected = np.zeros(size, dtype=bool)
    expected[20:70, 30:130] = up.numpy()
    got = decode_masks([region_mask_rle(logits, region, region, size, 0.5)], *size)[0]
    assert (got != expected).sum() <= 2  # grid sampling vs interpolate: rounding at the threshold only
    inside = decode_masks([region_mask_rle(logits, region, (40, 25, 60, 45), size, 0.5)], *size)[0]
    np.testing.assert_array_equal(inside[25:45, 40:60], got[25:45, 40:60])
    assert not inside[:25].any() and not inside[:, :40].any() and not inside[45:].any()


def test_sliced_settings_are_checked_and_box_prompts_refused(tmp_path):
    config = load_config(
        PredictConfig, None, ["postprocess.tiling.size=512", "postprocess.tiling.merge_metric=iou"]
    )
    assert config.postprocess.tiling == SlicingConfig(size=512, merge_metric="iou")
    for bad in ("postprocess.tiling.merge_metric=nms", "postprocess.tiling.overlap=1"):
        with pytest.raises(ConfigError):
            load_config(PredictConfig, None, [bad])
    with pytest.raises(ConfigError, match="box prompts"):
        _predictor(size=64).predict(_image(tmp_path, []), ["square"], boxes=[(1, 1, 5, 5)])


def test_predict_files_streams_sliced_results_on_the_whole_image(tmp_path):
    path = _image(tmp_path, [(80, 80, 120, 120)])
    done = _predictor(size=64, overlap=0.25).predict_files(
        [path], ["square"], tmp_path / "out", progress=False
    )
    assert done.complete and len(done.results) == 1
    (result,) = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert result["bbox"] == pytest.approx([80, 80, 40, 40], abs=1e-4)
    assert result["segmentation"]["size"] == [200, 200]
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert index["images"][0]["width"] == 200 and (tmp_path / "out" / index["images"][0]["overlay"]).is_file()


def test_predict_and_eval_cli_run_sliced_with_the_tiny_model(tmp_path, capsys):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from eval_tiny_dataset import write_tiny_dataset

    from sam3tune.cli import main

    folder = write_tiny_dataset(tmp_path / "data")  # 64 x 48 images
    images = sorted(folder.glob("*.png")) or sorted(folder.glob("*.jpg"))
    out = tmp_path / "pred"
    args = ["predict", "--model", "tiny", "--prompt", "date", str(images[0]), "--out", str(out), "device=cpu"]
    assert (
        main(
            [
                *args,
                "postprocess.tiling.size=32",
                "postprocess.tiling.overlap=0.5",
                "postprocess.score_threshold=0",
            ]
        )
        == 0
    )
    results = json.loads((out / "predictions.json").read_text())
    assert results and all(r["segmentation"]["size"] == [48, 64] for r in results)
    assert all(r["bbox"][0] >= 0 and r["bbox"][0] + r["bbox"][2] <= 64 + 1e-3 for r in results)
    report = tmp_path / "report"
    common = ["eval", "--model", "tiny", "--data", str(tmp_path / "data"), "data.val=valid", "device=cpu"]
    code = main(
        [*common, "--out", str(report), "num_workers=0", "iou_types=[bbox]", "postprocess.tiling.size=32"]
    )
    assert code == 0
    metrics = json.loads((report / "eval.json").read_text())["model"]["metrics"]
    assert metrics["images"] == 3 and metrics["queries"] == 6 and metrics["detections"] > 0
    predictions = json.loads((report / "predictions.json").read_text())
    assert {p["image_id"] for p in predictions} == {0, 1, 2}
    capsys.readouterr()


def test_sliced_prediction_asks_at_most_max_queries_per_forward_with_the_same_detections(tmp_path):
    path = _image(tmp_path, [(80, 80, 120, 120), (10, 10, 20, 20)])
    prompts = ["square", "box", "big square"]  # the oracle finds the squares for one-word prompts only
    config = PostprocessConfig(score_threshold=0.5, tiling=SlicingConfig(size=64, overlap=0.25))
    found = {}
    for max_queries in (64, 2):
        model = QuerySizeModel()
        predictor = Predictor(model, word_tokenize, 64, config, "cpu", max_queries)
        found[max_queries] = predictor.predict(path, prompts)
        sizes = model.queries_per_forward
        assert max(sizes) <= max_queries
    assert max(sizes) == 2 and len(sizes) > 16  # 16 tiles x 3 prompts + the whole image's 3, in pieces of 2
    for prompt in prompts:
        np.testing.assert_allclose(found[2][prompt].boxes, found[64][prompt].boxes)
        np.testing.assert_allclose(found[2][prompt].scores, found[64][prompt].scores)
    assert len(found[2]["square"]) == 2 and len(found[2]["big square"]) == 0
