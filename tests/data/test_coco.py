"""The bad-input catalogue: each item raises an error naming the culprit or is a counted skip."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from sam3tune.data import DataConfig, DataError, build_train_dataset, find_splits, load_split, plan_queries
from sam3tune.data.images import read_rgb
from tests.data.conftest import basic_coco, write_split


def _load(folder):
    return load_split(find_splits(folder)[0], progress=False)


def _write(tmp_path, coco):
    write_split(tmp_path / "train", coco)
    return tmp_path / "train"


def _raises(tmp_path, coco, kind, *fragments):
    folder = _write(tmp_path, coco)
    with pytest.raises(DataError) as info:
        _load(folder)
    assert info.value.kind == kind
    message = str(info.value)
    for fragment in (str(folder / "_annotations.coco.json"), *fragments):
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


def test_valid_split_loads_without_problems(basic_split):
    split = _load(basic_split / "train")
    assert [i.image_id for i in split.images] == [1, 2, 3]
    assert sum(len(v) for v in split.objects.values()) == 3
    assert not split.problems.counts
    assert split.objects[1][0].box == (2.0, 2.0, 12.0, 10.0)


def test_truncated_json(tmp_path):
    folder = _write(tmp_path, basic_coco())
    path = folder / "_annotations.coco.json"
    path.write_text(path.read_text()[:150])
    with pytest.raises(DataError, match="invalid JSON at line 1 column") as info:
        _load(folder)
    assert str(path) in str(info.value) and info.value.kind == "invalid_json"


def test_invalid_json(tmp_path):
    folder = _write(tmp_path, basic_coco())
    (folder / "_annotations.coco.json").write_text("{'images': []}")
    with pytest.raises(DataError, match="invalid JSON"):
        _load(folder)


@pytest.mark.parametrize("key", ["images", "annotations", "categories"])
def test_missing_top_level_key(tmp_path, key):
    coco = basic_coco()
    del coco[key]
    _raises(tmp_path, coco, "missing_key", f"missing top-level key {key!r}")


def test_annotation_pointing_to_missing_image_is_counted(tmp_path):
    coco = basic_coco()
    coco["annotations"].append({"id": 77, "image_id": 999, "category_id": 1, "bbox": [1, 1, 2, 2]})
    split = _load(_write(tmp_path, coco))
    assert split.problems["annotation_missing_image"] == 1
    assert split.problems.examples["annotation_missing_image"][0].startswith("annotation 77 (image 999)")


def test_annotation_pointing_to_missing_category_is_counted(tmp_path):
    coco = basic_coco()
    coco["annotations"].append({"id": 78, "image_id": 1, "category_id": 5, "bbox": [1, 1, 2, 2]})
    split = _load(_write(tmp_path, coco))
    assert split.problems["annotation_missing_category"] == 1
    assert "annotation 78" in split.problems.examples["annotation_missing_category"][0]
    assert "category with id 5" in split.problems.examples["annotation_missing_category"][0]


def test_duplicate_image_id(tmp_path):
    coco = basic_coco()
    coco["images"][1]["id"] = 1
    _raises(tmp_path, coco, "duplicate_image_id", "image id 1 appears twice", "'a.png'", "'b.png'")


def test_duplicate_annotation_id(tmp_path):
    coco = basic_coco()
    coco["annotations"][2]["id"] = 10
    _raises(tmp_path, coco, "duplicate_annotation_id", "annotation ids appear more than once: 10")


def test_image_file_missing_is_counted(tmp_path):
    folder = _write(tmp_path, basic_coco())
    (folder / "b.png").unlink()
    split = _load(folder)
    assert split.problems["image_missing"] == 1
    assert "image 2 'b.png'" in split.problems.examples["image_missing"][0]
    assert [i.image_id for i in split.images] == [1, 3]
    assert 2 not in split.objects


def test_image_file_unreadable_is_counted(tmp_path):
    folder = _write(tmp_path, basic_coco())
    (folder / "b.png").write_bytes(b"this is not an image")
    split = _load(folder)
    assert split.problems["image_unreadable"] == 1
    assert "image 2 'b.png'" in split.problems.examples["image_unreadable"][0]


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_image_file_truncated_is_counted(tmp_path, fmt):
    coco = basic_coco()
    coco["images"][0].update(file_name="a.img", width=64, height=48)
    coco["annotations"] = coco["annotations"][2:]
    folder = _write(tmp_path, coco)
    buffer = io.BytesIO()
    noise = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(buffer, format=fmt)
    (folder / "a.img").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    split = _load(folder)
    assert split.problems["image_truncated"] == 1
    assert "image 1 'a.img'" in split.problems.examples["image_truncated"][0]
    assert [i.image_id for i in split.images] == [2, 3]


@pytest.mark.parametrize("file_name", ["../outside.png", "sub/../../outside.png", "/etc/passwd", "C:\\x.png"])
def test_file_name_escaping_the_root(tmp_path, file_name):
    coco = basic_coco()
    coco["images"][2]["file_name"] = file_name
    message = _raises(tmp_path, coco, "path_escapes_root", "image 3", repr(file_name))
    assert "escapes" in message or "absolute" in message


@pytest.mark.parametrize("bbox", [[1, 1, 0, 5], [1, 1, 5, -2]])
def test_zero_or_negative_box_is_counted(tmp_path, bbox):
    coco = basic_coco()
    coco["annotations"][0]["bbox"] = bbox
    split = _load(_write(tmp_path, coco))
    assert split.problems["box_nonpositive"] == 1
    assert split.problems.examples["box_nonpositive"][0].startswith("annotation 10 (image 1)")
    assert [o.annotation_id for o in split.objects[1]] == [11]


def test_box_outside_image_is_clipped_and_counted(tmp_path):
    coco = basic_coco()
    coco["annotations"][0]["bbox"] = [-4, 20, 10, 10]  # image is 32 x 24
    coco["annotations"][1]["bbox"] = [40, 4, 5, 5]  # entirely outside
    coco["annotations"][1]["segmentation"] = []
    split = _load(_write(tmp_path, coco))
    assert split.problems["box_outside_image"] == 1 and split.problems["box_entirely_outside"] == 1
    assert "annotation 10" in split.problems.examples["box_outside_image"][0]
    assert "annotation 11" in split.problems.examples["box_entirely_outside"][0]
    assert split.objects[1][0].box == (0.0, 20.0, 6.0, 24.0)


@pytest.mark.parametrize(
    ("segmentation", "kind"),
    [
        ([[1, 1, 5, 1]], "polygon_invalid"),  # 2 points
        ([[1, 1, 5, 1, 5, 5, 1]], "polygon_invalid"),  # odd count
        ({"size": [10, 10], "counts": [100]}, "rle_size_mismatch"),
        ({"size": [24, 32], "counts": "0a"}, "segmentation_malformed"),  # corrupt compressed RLE
        ("polygon", "segmentation_malformed"),
    ],
)
def test_bad_segmentation_drops_the_mask_keeps_the_box(tmp_path, segmentation, kind):
    coco = basic_coco()
    coco["annotations"][0]["segmentation"] = segmentation
    folder = _write(tmp_path, coco)
    split = _load(folder)
    assert split.problems[kind] == 1
    assert split.problems.examples[kind][0].startswith("annotation 10 (image 1)")
    obj = split.objects[1][0]
    assert obj.annotation_id == 10 and obj.segmentation is None
    dataset = build_train_dataset(
        DataConfig(root=tmp_path, resolution=32, mask_resolution=16), progress=False
    )
    target = dataset[0].targets[0]  # image 1, category 1
    assert target["is_valid_mask"].tolist() == [False] and target["boxes"].shape == (1, 4)


def test_one_bad_polygon_part_among_good_ones(tmp_path):
    coco = basic_coco()
    coco["annotations"][0]["segmentation"] = [[2, 2, 12, 2, 12, 10, 2, 10], [1, 1, 2]]
    split = _load(_write(tmp_path, coco))
    assert split.problems["polygon_invalid"] == 1
    assert split.objects[1][0].segmentation == [[2.0, 2.0, 12.0, 2.0, 12.0, 10.0, 2.0, 10.0]]


def test_json_size_differs_from_image_is_counted(tmp_path):
    coco = basic_coco()
    coco["images"][1].update(width=30)
    folder = _write(tmp_path, coco)
    (folder / "b.png").unlink()
    Image.new("RGB", (32, 24)).save(folder / "b.png")
    split = _load(folder)
    assert split.problems["image_size_mismatch"] == 1
    example = split.problems.examples["image_size_mismatch"][0]
    assert "image 2 'b.png'" in example and "30x24" in example and "32x24" in example


def test_exif_orientation_is_applied_before_the_size_check(tmp_path):
    coco = basic_coco()
    coco["images"][0].update(file_name="a.jpg", width=24, height=32)  # as displayed (rotated)
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] != 1]
    folder = _write(tmp_path, coco)
    stored = Image.new("RGB", (32, 24), (200, 10, 10))  # stored landscape
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    stored.save(folder / "a.jpg", exif=exif)
    split = _load(folder)
    assert not split.problems["image_size_mismatch"]
    assert (split.images[0].width, split.images[0].height) == (24, 32)
    assert read_rgb(folder / "a.jpg").size == (24, 32)


@pytest.mark.parametrize(
    ("mode", "array", "expected"),
    [
        ("L", np.full((24, 32), 90, np.uint8), (90, 90, 90)),
        ("RGBA", np.dstack([np.full((24, 32, 3), 70, np.uint8), np.zeros((24, 32), np.uint8)]), (70, 70, 70)),
        ("I;16", np.full((24, 32), 257 * 200, np.uint16), (200, 200, 200)),
    ],
)
def test_non_rgb_images_are_converted_and_counted(tmp_path, mode, array, expected):
    folder = _write(tmp_path, basic_coco())
    image = Image.fromarray(array)
    assert image.mode == mode
    image.save(folder / "a.png")
    split = _load(folder)
    assert split.problems["image_converted"] == 1
    assert f"(mode {mode})" in split.problems.examples["image_converted"][0]
    rgb = read_rgb(folder / "a.png")
    assert rgb.mode == "RGB" and rgb.getpixel((3, 3)) == expected


def test_palette_image_is_converted(tmp_path):
    folder = _write(tmp_path, basic_coco())
    Image.new("RGB", (32, 24), (10, 200, 30)).convert("P", palette=Image.Palette.ADAPTIVE).save(
        folder / "c.png"
    )
    split = _load(folder)
    assert "image 3 'c.png' (mode P)" in split.problems.examples["image_converted"][0]
    assert read_rgb(folder / "c.png").getpixel((0, 0)) == (10, 200, 30)


def test_empty_split_no_images(tmp_path):
    coco = basic_coco()
    coco["images"] = []
    _raises(tmp_path, coco, "empty_split", "no images")


def test_empty_split_no_annotations(tmp_path):
    coco = basic_coco()
    coco["annotations"] = []
    _raises(tmp_path, coco, "empty_split", "no annotations")


def test_split_where_every_annotation_is_invalid_is_an_error(tmp_path):
    coco = basic_coco()
    for ann in coco["annotations"]:
        ann["bbox"] = [1, 1, 0, 0]
    message = _raises(tmp_path, coco, "no_valid_annotations", "none of the 3 annotations")
    assert "3 box_nonpositive" in message


def test_split_with_only_crowd_annotations_is_an_error(tmp_path):
    coco = basic_coco()
    for ann in coco["annotations"]:
        ann["iscrowd"] = 1
    _raises(tmp_path, coco, "no_valid_annotations", "3 crowd")


def test_split_whose_images_are_all_missing_is_an_error(tmp_path):
    folder = _write(tmp_path, basic_coco())
    for name in ("a.png", "b.png", "c.png"):
        (folder / name).unlink()
    with pytest.raises(DataError, match="none of the 3 images can be used") as info:
        _load(folder)
    assert "3 image_missing" in str(info.value)


def test_no_usable_queries_is_an_error(basic_split):
    split = _load(basic_split / "train")
    for objects in split.objects.values():  # as if every object were crowd
        objects[:] = [o.__class__(o.annotation_id, o.category_id, o.box, None, True) for o in objects]
    with pytest.raises(DataError, match="no usable queries") as info:
        plan_queries(split)
    assert str(split.annotation_file) in str(info.value)


def test_malformed_annotation_is_counted(tmp_path):
    coco = basic_coco()
    coco["annotations"][0]["bbox"] = [1, 2, "3", 4]
    coco["annotations"].append({"image_id": 1, "category_id": 1, "bbox": [1, 1, 2, 2]})
    split = _load(_write(tmp_path, coco))
    assert split.problems["annotation_malformed"] == 2
    assert split.problems.examples["annotation_malformed"][0].startswith("annotation 10 (image 1)")
    assert "annotation entry #3" in split.problems.examples["annotation_malformed"][1]


def test_image_entry_without_size_is_an_error(tmp_path):
    coco = basic_coco()
    del coco["images"][1]["height"]
    _raises(tmp_path, coco, "missing_key", "image 2", "'height'")


def test_compressed_and_uncompressed_rle_decode_identically(tmp_path):
    from faster_coco_eval.core import mask as coco_mask

    truth = np.zeros((24, 32), dtype=np.uint8)
    truth[3:9, 5:20] = 1
    compressed = coco_mask.encode(np.asfortranarray(truth))
    runs, value, count = [], 0, 0
    for pixel in truth.flatten(order="F"):
        if pixel != value:
            runs.append(count)
            value, count = pixel, 0
        count += 1
    runs.append(count)
    coco = basic_coco()
    coco["annotations"][0]["segmentation"] = {"size": [24, 32], "counts": compressed["counts"].decode()}
    coco["annotations"][1]["segmentation"] = {"size": [24, 32], "counts": runs}
    coco["annotations"][1]["category_id"] = 1
    for ann in coco["annotations"][:2]:
        ann["bbox"] = [5, 3, 15, 6]  # the mask's box (masks outside their box are ignored)
    _write(tmp_path, coco)
    config = DataConfig(root=tmp_path, val="train", resolution=64, mask_resolution=24)  # 32x24 -> 64 -> 24
    from sam3tune.data import build_eval_dataset

    target = build_eval_dataset(config, progress=False)[0].targets[0]
    assert target["is_valid_mask"].tolist() == [True, True]
    assert torch.equal(target["masks"][0], target["masks"][1])
    assert int(target["masks"][0].sum()) > 0


def test_json_cleanly_written(tmp_path):
    """The fixture writes what it was given (guards the helpers above)."""
    path = write_split(tmp_path / "x", basic_coco())
    assert json.loads(path.read_text()) == basic_coco()
