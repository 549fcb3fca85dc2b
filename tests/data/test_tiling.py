"""Tiled training data: the tile grid, objects on tile borders, exact mask clipping, the drop rule."""

from __future__ import annotations

import json

import numpy as np
import pytest
from faster_coco_eval.core import mask as coco_mask
from PIL import Image

from sam3tune.cli import main
from sam3tune.config import ConfigError, load_config
from sam3tune.data import DataConfig, build_train_dataset, load_split, plan_queries, resolve_split
from sam3tune.data.config import TilingConfig
from sam3tune.data.masks import decode_segmentation
from sam3tune.data.tiling import clip_object, crop_mask, tile_plan, tile_starts, tile_windows
from sam3tune.train.config import TrainConfig


def full_mask(segmentation, height, width) -> np.ndarray:
    crop = decode_segmentation(segmentation, height, width)
    out = np.zeros((height, width), dtype=bool)
    h, w = crop.mask.shape
    out[crop.top : crop.top + h, crop.left : crop.left + w] = crop.mask
    return out


@pytest.mark.parametrize(
    ("length", "size", "overlap", "expected"),
    [
        (100, 100, 0.2, [0]),
        (80, 100, 0.5, [0]),
        (250, 100, 0.2, [0, 80, 150]),  # stride 80; the last tile moved inside: 150 + 100 = 250
        (200, 100, 0.0, [0, 100]),
        (101, 100, 0.25, [0, 1]),
    ],
)
def test_tile_starts(length, size, overlap, expected):
    assert tile_starts(length, size, overlap) == expected


def test_windows_cover_the_image_with_the_overlap_asked():
    windows = tile_windows(530, 300, 128, 0.25)
    covered = np.zeros((300, 530), dtype=np.int32)
    for left, top, right, bottom in windows:
        assert (right - left, bottom - top) == (128, 128)  # every tile full-sized
        covered[top:bottom, left:right] += 1
    assert covered.min() >= 1
    xs = sorted({w[0] for w in windows})
    assert xs[:4] == [0, 96, 192, 288] and xs[-1] == 530 - 128  # stride 128 * 0.75 = 96
    # a side no larger than the tile is one window of the image's own size
    assert tile_windows(90, 60, 128, 0.25) == [(0, 0, 90, 60)]


def _rle(mask: np.ndarray) -> dict:
    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": list(mask.shape), "counts": rle["counts"].decode("ascii")}


def test_rle_and_polygon_masks_are_cropped_exactly():
    rng = np.random.default_rng(0)
    height, width = 97, 131
    blobs = rng.random((height, width)) < 0.3
    blobs[10:60, 20:100] = True
    polygon = [[5.5, 3.2, 120.7, 15.1, 90.3, 92.6, 30.1, 70.4, 12.9, 95.0]]
    for segmentation in (_rle(blobs), {"size": [height, width], "counts": _rle(blobs)["counts"]}, polygon):
        full = full_mask(segmentation, height, width)
        for window in [(0, 0, 64, 64), (40, 30, 104, 94), (67, 33, 131, 97), (100, 0, 131, 20)]:
            left, top, right, bottom = window
            np.testing.assert_array_equal(
                crop_mask(segmentation, height, width, window), full[top:bottom, left:right]
            )
    # uncompressed (list) counts crop the same
    flat = blobs.flatten(order="F")
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat.astype(np.int8), [2]])))
    counts = np.diff(np.concatenate([[0], changes])).tolist()
    listed = {"size": [height, width], "counts": [int(c) for c in counts]}
    assert sum(listed["counts"]) == height * width
    np.testing.assert_array_equal(crop_mask(listed, height, width, (40, 30, 104, 94)), blobs[30:94, 40:104])


def test_polygon_much_larger_than_the_tile_is_clipped_before_rasterising():
    height = width = 4000
    polygon = [[-10.0, -10.0, 3990.0, 5.0, 3000.0, 3999.0]]  # a triangle over most of the image
    window = (1500, 1500, 1564, 1564)
    np.testing.assert_array_equal(
        crop_mask(polygon, height, width, window), full_mask(polygon, height, width)[1500:1564, 1500:1564]
    )


def _object(box, segmentation=None, annotation_id=1, category_id=1, iscrowd=False):
    from sam3tune.data.coco import CocoObject

    return CocoObject(annotation_id, category_id, box, segmentation, iscrowd)


def _image(width=200, height=100):
    from pathlib import Path

    from sam3tune.data.coco import CocoImage

    return CocoImage(1, "a.png", Path("a.png"), width, height, "RGB")


def test_object_on_a_border_keeps_its_clipped_box_mask_and_visible_share():
    image = _image()
    square = [[90.0, 20.0, 130.0, 20.0, 130.0, 60.0, 90.0, 60.0]]  # 40 x 40 px, x in [90, 130)
    obj = _object((90.0, 20.0, 130.0, 60.0), square)
    clipped, share = clip_object(obj, image, (0, 0, 100, 100))
    assert clipped.box == (90.0, 20.0, 100.0, 60.0)
    assert share == pytest.approx(10 / 40)
    mask = full_mask(clipped.segmentation, 100, 100)
    assert mask.sum() == 10 * 40 and mask[20:60, 90:100].all()
    clipped, share = clip_object(obj, image, (100, 0, 200, 100))
    assert clipped.box == (0.0, 20.0, 30.0, 60.0) and share == pytest.approx(30 / 40)
    assert clip_object(obj, image, (150, 0, 200, 100)) == (None, 0.0)
    # box-only objects: the share of the box area
    boxed = _object((90.0, 20.0, 130.0, 60.0))
    clipped, share = clip_object(boxed, image, (0, 0, 100, 100))
    assert clipped.segmentation is None and share == pytest.approx(0.25)


def _write_large_split(folder, width=200, height=100):
    """One large image (200 x 100), objects placed against a tiling of 100 px tiles with overlap 0
    (windows x in [0, 100) and [100, 200)); a second category only on the right."""
    folder.mkdir(parents=True)
    Image.fromarray(np.zeros((height, width, 3), dtype=np.uint8)).save(folder / "big.png")

    def square(ann_id, x0, y0, side, category=1):
        x1, y1 = x0 + side, y0 + side
        return {
            "id": ann_id,
            "image_id": 1,
            "category_id": category,
            "bbox": [x0, y0, side, side],
            "iscrowd": 0,
            "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]],
        }

    coco = {
        "images": [{"id": 1, "file_name": "big.png", "width": width, "height": height}],
        "categories": [{"id": 1, "name": "dot"}, {"id": 2, "name": "ring"}],
        "annotations": [
            square(1, 10, 10, 20),  # wholly in the left tile
            square(2, 90, 50, 20),  # half in each: kept on both (share 0.5 >= 0.5)
            square(3, 94, 10, 20),  # 6 / 20 left, 14 / 20 right: dropped left, kept right
            square(4, 150, 60, 20, category=2),  # wholly right
        ],
    }
    (folder / "_annotations.coco.json").write_text(json.dumps(coco))


def _plan(folder, **tiling):
    split = load_split(resolve_split(folder, "train"), progress=False)
    plan = plan_queries(split)
    return tile_plan(plan, TilingConfig(**tiling))


def test_drop_rule_and_negatives_on_tiles(tmp_path):
    _write_large_split(tmp_path / "train")
    plan = _plan(tmp_path / "train", size=100, overlap=0.0, min_visible=0.5, empty_tiles=1.0)
    left, right = plan.images
    assert left.image.window == (0, 0, 100, 100) and right.image.window == (100, 0, 200, 100)
    assert left.image.source_id == 1 and left.image.image_id != right.image.image_id != 1
    assert [o.annotation_id for o in left.positives[1]] == [1, 2]  # 3 dropped: 30% inside
    assert left.negative_candidates == (2,)  # "ring" is absent on the left tile
    assert [o.annotation_id for o in right.positives[1]] == [2, 3]
    assert [o.annotation_id for o in right.positives[2]] == [4]
    assert right.negative_candidates == ()
    by_id = {o.annotation_id: o for o in right.positives[1]}
    assert by_id[2].box == (0.0, 50.0, 10.0, 70.0) and by_id[3].box == (0.0, 10.0, 14.0, 30.0)
    summary = plan.tiling
    assert (summary.images_tiled, summary.tiles, summary.tiles_with_objects) == (1, 2, 2)
    assert (summary.object_tiles_kept, summary.object_tiles_clipped, summary.object_tiles_dropped) == (
        5,
        3,
        1,
    )
    assert summary.objects_lost == 0
    assert plan.problems["tile_object_dropped"] == 1


def test_dropped_object_makes_its_category_neither_positive_nor_negative(tmp_path):
    _write_large_split(tmp_path / "train")
    plan = _plan(tmp_path / "train", size=100, overlap=0.0, min_visible=0.9)
    left, _ = plan.images
    assert [o.annotation_id for o in left.positives[1]] == [1]  # 2 (50%) and 3 (30%) dropped
    assert 1 not in left.negative_candidates
    # object 2 (half on each tile) and object 3 (70% at best) are a target on no tile: lost
    assert plan.tiling.objects_lost == 2 and plan.problems["tile_object_lost"] == 2
    assert all(
        "annotation 2" in e or "annotation 3" in e or "annotation 3" in e
        for e in plan.problems.examples["tile_object_lost"]
    )


def test_empty_tiles_share_kept(tmp_path):
    folder = tmp_path / "train"
    folder.mkdir()
    Image.fromarray(np.zeros((100, 1000, 3), dtype=np.uint8)).save(folder / "wide.png")
    coco = {
        "images": [{"id": 7, "file_name": "wide.png", "width": 1000, "height": 100}],
        "categories": [{"id": 1, "name": "dot"}, {"id": 2, "name": "ring"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 1, "bbox": [10, 10, 20, 20], "iscrowd": 0},
            {"id": 2, "image_id": 7, "category_id": 2, "bbox": [50, 10, 20, 20], "iscrowd": 0},
        ],
    }
    (folder / "_annotations.coco.json").write_text(json.dumps(coco))
    for share, kept in ((0.0, 0), (0.5, 4), (1.0, 9)):
        plan = _plan(folder, size=100, overlap=0.0, empty_tiles=share)
        assert plan.tiling.tiles == 10
        assert plan.tiling.empty_tiles_kept == kept and plan.tiling.empty_tiles_left_out == 9 - kept
        assert len(plan.images) == 1 + kept
    first = [q.image.window for q in _plan(folder, size=100, overlap=0.0, empty_tiles=0.5).images]
    assert first == [q.image.window for q in _plan(folder, size=100, overlap=0.0, empty_tiles=0.5).images]


def test_training_samples_are_the_tile_pixels_and_targets(tmp_path, tokenize):
    folder = tmp_path / "train"
    _write_large_split(folder)
    pixels = np.random.default_rng(1).integers(0, 256, size=(100, 200, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / "big.png")
    config = DataConfig(
        root=tmp_path, resolution=100, tiling=TilingConfig(size=100, overlap=0.0, empty_tiles=1.0)
    )
    dataset = build_train_dataset(config, augment=False, progress=False)
    assert len(dataset) == 2
    sample = dataset[1]  # the right tile, at its own size: the canvas is the window's pixels
    np.testing.assert_array_equal(sample.image.numpy().transpose(1, 2, 0), pixels[:, 100:200])
    boxes = {c: t["boxes"] for c, t in zip(sample.category_ids, sample.targets, strict=True)}
    np.testing.assert_allclose(boxes[1].numpy(), [[0.05, 0.6, 0.1, 0.2], [0.07, 0.2, 0.14, 0.2]], atol=1e-6)
    masks = {c: t["masks"] for c, t in zip(sample.category_ids, sample.targets, strict=True)}
    assert masks[1][0].sum() == 10 * 20 and masks[2][0].sum() == 20 * 20
    # images no larger than the tile stay whole, with their own ids
    whole = build_train_dataset(
        DataConfig(root=tmp_path, resolution=100, tiling=TilingConfig(size=256)),
        augment=False,
        progress=False,
    )
    assert (
        len(whole) == 1 and whole.plan.images[0].image.window is None and whole.plan.tiling.images_whole == 1
    )


def test_tiling_settings_are_checked_and_reach_the_train_config():
    config = load_config(TrainConfig, None, ["data.tiling.size=512", "data.tiling.overlap=0.25"])
    assert config.data.tiling == TilingConfig(size=512, overlap=0.25)
    for bad in ("data.tiling.size=0", "data.tiling.overlap=1", "data.tiling.min_visible=1.5"):
        with pytest.raises(ConfigError, match=bad.split("=")[0].split(".")[-1]):
            load_config(TrainConfig, None, [bad])


def test_data_inspect_reports_tiles_kept_and_dropped_objects(tmp_path, capsys):
    _write_large_split(tmp_path / "train")
    status = main(["data", "inspect", str(tmp_path), "tiling.size=100", "tiling.overlap=0", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert status == 0 and report["settings"]["tiling"]["size"] == 100
    (split,) = report["splits"]
    tiling = split["tiling"]
    assert (tiling["tiles"], tiling["images_tiled"], tiling["object_tiles_kept"]) == (2, 1, 5)
    assert (tiling["object_tiles_dropped"], tiling["objects_lost"]) == (1, 0)
    assert tiling["queries"] == {"positive": 3, "negative": 1}
    assert "tile_object_dropped" in [p["kind"] for p in split["problems"]]
    assert main(["data", "inspect", str(tmp_path), "tiling.size=100", "tiling.overlap=0"]) == 0
    text = capsys.readouterr().out
    assert "tiles (100 px, overlap 0): 2 from 1 images" in text
    assert "1 dropped (< 0.5 visible)" in text
    # without tiling the entry is null
    main(["data", "inspect", str(tmp_path), "--json"])
    assert json.loads(capsys.readouterr().out)["splits"][0]["tiling"] is None
