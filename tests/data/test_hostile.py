"""Hostile and careless data (issue 14): bounded geometry, label corruption, confinement, ids, JSON.

Each test builds the bad input and asserts the error (file and id) or the counted problem. Nothing here
allocates much: a missing bound shows up as a wrong count or as coordinates beyond what was allowed
reaching the rasteriser, never as an out-of-memory kill.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from faster_coco_eval.core import mask as coco_mask
from PIL import Image, ImageFile

from sam3tune import json_file
from sam3tune.data import (
    CATALOGUE,
    DataConfig,
    DataError,
    build_eval_dataset,
    build_train_dataset,
    check_prompt_tokens,
    find_splits,
    load_split,
    masks,
    plan_queries,
)
from sam3tune.data import images as images_module
from sam3tune.data.inspection import inspect_dataset
from sam3tune.data.masks import (
    MAX_OUTLINE_PER_SIDE,
    SegmentationError,
    decode_segmentation,
    validate_segmentation,
)
from tests.data.conftest import basic_coco, write_image, write_split


def _with_fourth_image(coco):
    """``coco`` plus image 4 'd.png' with one object, so the split stays usable when images 1-2 go."""
    coco["images"].append({"id": 4, "file_name": "d.png", "width": 32, "height": 24})
    coco["annotations"].append(
        {
            "id": 13,
            "image_id": 4,
            "category_id": 1,
            "bbox": [4, 4, 6, 6],
            "segmentation": [[4, 4, 10, 4, 10, 10, 4, 10]],
        }
    )
    return coco


def _load(folder, **kwargs):
    return load_split(find_splits(folder)[0], progress=False, **kwargs)


def _split(tmp_path, coco):
    write_split(tmp_path / "train", coco)
    return _load(tmp_path / "train")


def _error(tmp_path, coco, kind, *fragments):
    write_split(tmp_path / "train", coco)
    with pytest.raises(DataError) as info:
        plan_queries(_load(tmp_path / "train"))
    assert info.value.kind == kind
    for fragment in (str(tmp_path / "train" / "_annotations.coco.json"), *fragments):
        assert fragment in str(info.value), f"{fragment!r} not in {info.value}"
    return str(info.value)


@pytest.fixture
def rasterised(monkeypatch):
    """Every polygon coordinate that reaches the COCO rasteriser (``frPyObjects``), in any code path."""
    seen: list[float] = []
    original = coco_mask.frPyObjects

    def spy(polygons, height, width):
        if isinstance(polygons, list):
            seen.extend(abs(float(v)) for p in polygons for v in p)
        return original(polygons, height, width)

    monkeypatch.setattr(masks.coco_mask, "frPyObjects", spy)
    return seen


# ------------------------------------------------------------------ 1. resource exhaustion, one annotation
def test_polygon_with_huge_coordinates_is_refused_before_rasterising(tmp_path, rasterised):
    coco = basic_coco()  # 32 x 24 images
    coco["annotations"][0]["segmentation"] = [[2, 2, 1e9, 2, 1e9, 1e9, 2, 1e9]]
    split = _split(tmp_path, coco)
    assert split.problems["segmentation_out_of_range"] == 1
    assert "annotation 10 (image 1)" in split.problems.examples["segmentation_out_of_range"][0]
    obj = split.objects[1][0]
    assert obj.annotation_id == 10 and obj.segmentation is None and obj.box == (2.0, 2.0, 12.0, 10.0)
    config = DataConfig(root=tmp_path, val="train", resolution=64, mask_resolution=16)
    sample = build_eval_dataset(config, progress=False)[0]
    assert sample.targets[0]["is_valid_mask"].tolist() == [False]  # box kept, mask marked invalid
    assert max(rasterised) <= 32  # nothing beyond the image reached the rasteriser


def test_polygons_slightly_out_are_kept_far_out_clipped_absurd_refused(rasterised):
    side = 32  # 32 x 24 image: vertices up to 8 sides out are clipped at 1 side, further ones refused
    full = coco_mask.decode(
        coco_mask.merge(coco_mask.frPyObjects([[-200, 2, 250, 2, 250, 10, -200, 10]], 24, 32))
    )
    rasterised.clear()  # the reference above went to the rasteriser unbounded, on purpose
    within = validate_segmentation([[-10, 2, 40, 2, 40, 10, -10, 10]], 24, 32)
    assert not within.clipped and within.segmentation == [[-10.0, 2.0, 40.0, 2.0, 40.0, 10.0, -10.0, 10.0]]
    far = validate_segmentation([[-200, 2, 250, 2, 250, 10, -200, 10]], 24, 32)
    assert far.clipped
    coords = [v for p in far.segmentation for v in p]
    assert min(coords) >= -side and max(coords) <= 32 + side
    # axis-aligned cuts are exact: the same pixels as the unclipped polygon
    crop = decode_segmentation(far.segmentation, 24, 32)
    assert int(crop.mask.sum()) == int(full.sum()) == 32 * 8
    with pytest.raises(SegmentationError) as info:
        validate_segmentation([[0, 0, 9 * side + 40, 0, 9 * side + 40, 5]], 24, 32)
    assert info.value.kind == "segmentation_out_of_range" and "wrong units" in str(info.value)
    assert max(rasterised) <= 32 + side


def test_polygon_outline_too_long_to_rasterise_is_refused():
    zigzag = [v for i in range(2000) for v in (0.0 if i % 2 else 19.0, i / 100)]  # 2000 edges across 20 px
    with pytest.raises(SegmentationError) as info:
        validate_segmentation([zigzag], 20, 20)
    assert info.value.kind == "segmentation_out_of_range" and "outline" in str(info.value)
    assert MAX_OUTLINE_PER_SIDE * 40 < 2000 * 19  # what the cap protects against


def test_clipped_polygon_is_counted_and_still_trains(tmp_path):
    coco = basic_coco()
    coco["annotations"][0]["segmentation"] = [[2, 2, 200, 2, 200, 10, 2, 10]]  # 5 sides past the right edge
    coco["annotations"][0]["bbox"] = [2, 2, 30, 8]
    split = _split(tmp_path, coco)
    assert split.problems["polygon_clipped"] == 1
    crop = decode_segmentation(split.objects[1][0].segmentation, 24, 32)
    assert int(crop.mask.sum()) == 30 * 8


def test_deeply_nested_json_is_a_clear_error(tmp_path):
    folder = tmp_path / "train"
    write_split(folder, basic_coco())
    path = folder / "_annotations.coco.json"
    path.write_text('{"images": ' + "[" * 200_000 + "]" * 200_000 + "}")
    with pytest.raises(DataError) as info:
        _load(folder)
    assert info.value.kind == "invalid_json" and "nested too deeply" in str(info.value)
    assert str(path) in str(info.value)


def test_json_above_the_size_cap_is_refused_before_reading(tmp_path, monkeypatch):
    folder = tmp_path / "train"
    write_split(folder, basic_coco())
    monkeypatch.setattr(json_file, "MAX_JSON_BYTES", 100)
    with pytest.raises(DataError) as info:
        _load(folder)
    assert info.value.kind == "invalid_json" and "split it" in str(info.value)
    assert str(folder / "_annotations.coco.json") in str(info.value)


def test_large_images_are_reported_and_decoded_reduced(tmp_path, monkeypatch):
    monkeypatch.setattr("sam3tune.data.coco.LARGE_IMAGE_PIXELS", 32 * 24 - 1)
    split = _split(tmp_path, basic_coco())
    assert split.problems["image_large"] == 3
    assert "32x24" in split.problems.examples["image_large"][0]
    big = tmp_path / "big.png"
    pixels = np.random.default_rng(0).integers(0, 256, size=(300, 400, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(big)
    monkeypatch.setattr(images_module, "LARGE_IMAGE_PIXELS", 1000)
    reduced = images_module.read_rgb(big, at_least=100)
    assert reduced.size == (134, 100)  # reduced by 3: both sides still >= 100
    assert images_module.read_rgb(big).size == (400, 300)  # without a target size: full size


# ------------------------------------------------------------------------- 2. silent label corruption
@pytest.mark.parametrize("names", [("Car", "car"), ("traffic_light", "Traffic-Light."), ("bus", "bus")])
def test_categories_with_the_same_prompt_are_refused(tmp_path, names):
    coco = basic_coco()
    coco["categories"] = [{"id": 1, "name": names[0]}, {"id": 2, "name": names[1]}]
    message = _error(tmp_path, coco, "prompt_collision", "category 1", "category 2", "data.prompts")
    report = inspect_dataset(tmp_path / "train", progress=False)
    assert not report["ok"] and report["splits"][0]["error"]["kind"] == "prompt_collision"
    assert repr(names[0]) in message


def test_a_prompt_map_separates_colliding_categories(tmp_path):
    coco = basic_coco()
    coco["categories"] = [{"id": 1, "name": "Car"}, {"id": 2, "name": "car"}]
    write_split(tmp_path / "train", coco)
    (tmp_path / "prompts.json").write_text(json.dumps({"1": "red car", "2": "blue car"}))
    config = DataConfig(root=tmp_path, prompts=tmp_path / "prompts.json")
    assert {c.prompt for c in build_train_dataset(config, progress=False).plan.categories.values()} == {
        "red car",
        "blue car",
    }


def _two_word_tokenize(texts):
    """A tokenizer with a context of 2 words (ids = word lengths), like CLIP cutting long prompts."""
    rows = [[len(w) for w in t.split()][:2] for t in texts]
    ids = torch.zeros(len(rows), 2, dtype=torch.int64)
    mask = torch.zeros(len(rows), 2, dtype=torch.int64)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return ids, mask


def test_prompts_the_tokenizer_cuts_to_the_same_ids_are_refused(tmp_path):
    coco = basic_coco()
    coco["categories"] = [{"id": 1, "name": "big red car"}, {"id": 2, "name": "big red bus"}]
    plan = plan_queries(_split(tmp_path, coco))
    with pytest.raises(DataError) as info:
        check_prompt_tokens(plan, _two_word_tokenize, "train.json")
    assert info.value.kind == "prompt_collision" and "once tokenized" in str(info.value)
    assert "'big red car'" in str(info.value) and "'big red bus'" in str(info.value)


def test_prompts_the_tokenizer_cuts_are_counted(tmp_path, caplog):
    coco = basic_coco()
    coco["categories"] = [{"id": 1, "name": "big red car"}, {"id": 2, "name": "dot"}]
    plan = plan_queries(_split(tmp_path, coco))
    check_prompt_tokens(plan, _two_word_tokenize, "train.json")
    assert plan.problems["prompt_truncated"] == 1
    assert "'big red car'" in plan.problems.examples["prompt_truncated"][0]
    assert "cut by the tokenizer" in caplog.text


def test_the_same_file_under_two_image_ids_is_skipped(tmp_path):
    coco = _with_fourth_image(basic_coco())
    coco["images"][1]["file_name"] = "a.png"  # image 2 is image 1's file
    split = _split(tmp_path, coco)
    assert split.problems["image_duplicate_file"] == 2
    assert [i.image_id for i in split.images] == [3, 4]
    assert "image 1 'a.png'" in split.problems.examples["image_duplicate_file"][0]


def test_a_symlink_to_a_listed_file_counts_as_the_same_file(tmp_path):
    coco = _with_fourth_image(basic_coco())
    write_split(tmp_path / "train", coco)
    (tmp_path / "train" / "b.png").unlink()
    (tmp_path / "train" / "b.png").symlink_to(tmp_path / "train" / "a.png")
    split = _load(tmp_path / "train")
    assert split.problems["image_duplicate_file"] == 2


@pytest.mark.parametrize("value", ["0", "false", 2, -1, [0]])
def test_iscrowd_that_is_not_0_or_1_is_counted_and_ignored(tmp_path, value):
    coco = basic_coco()
    coco["annotations"][1]["iscrowd"] = value  # annotation 11: the only category 2 object
    split = _split(tmp_path, coco)
    assert split.problems["iscrowd_invalid"] == 1
    assert split.problems.examples["iscrowd_invalid"][0].startswith("annotation 11 (image 1): iscrowd = ")
    plan = plan_queries(split, keep_unused_categories=True)
    image1 = next(q for q in plan.images if q.image.image_id == 1)
    assert 2 not in image1.positives and 2 not in image1.negative_candidates  # neither target nor negative


@pytest.mark.parametrize("value", [0, 1, True, False, 0.0, None])
def test_iscrowd_0_or_1_is_accepted(tmp_path, value):
    coco = basic_coco()
    coco["annotations"][0]["iscrowd"] = value
    split = _split(tmp_path, coco)
    assert not split.problems["iscrowd_invalid"]
    assert split.objects[1][0].iscrowd == bool(value)


def test_exact_duplicate_annotations_are_counted_once(tmp_path):
    coco = basic_coco()
    coco["annotations"].append({**coco["annotations"][0], "id": 99})
    coco["annotations"].append({**coco["annotations"][0], "id": 98, "bbox": [2, 2, 10, 7]})  # not exact
    split = _split(tmp_path, coco)
    assert split.problems["annotation_duplicate"] == 1
    assert split.problems.examples["annotation_duplicate"] == [
        "annotation 99 (image 1) repeats annotation 10"
    ]
    assert [o.annotation_id for o in split.objects[1]] == [10, 11, 98]


def test_mask_off_its_box_is_ignored_and_box_kept(tmp_path):
    coco = basic_coco()
    coco["annotations"][0]["segmentation"] = [[20, 14, 30, 14, 30, 22, 20, 22]]  # box is x 2-12, y 2-10
    split = _split(tmp_path, coco)
    assert split.problems["mask_box_mismatch"] == 1
    assert "annotation 10 (image 1): mask spans x 20-30" in split.problems.examples["mask_box_mismatch"][0]
    assert split.objects[1][0].segmentation is None and split.objects[1][0].box == (2.0, 2.0, 12.0, 10.0)


def test_mask_that_rasterises_empty_is_ignored(tmp_path):
    coco = basic_coco()
    coco["annotations"][0]["segmentation"] = [[2, 2, 7, 2, 12, 2]]  # three points on one line
    coco["annotations"][2]["segmentation"] = {"size": [24, 32], "counts": [24 * 32]}  # RLE of nothing
    split = _split(tmp_path, coco)
    assert split.problems["mask_empty"] == 2
    assert split.objects[1][0].segmentation is None and split.objects[2][0].segmentation is None


def _jpeg_bytes(width=160, height=120):
    pixels = np.random.default_rng(3).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


@pytest.mark.parametrize("damage", ["zero_tail", "zero_block", "restart_order"])
def test_corrupt_jpeg_that_still_decodes_is_skipped(tmp_path, damage):
    data = bytearray(_jpeg_bytes())
    n = len(data)
    if damage == "zero_tail":  # partly written file: no end-of-image marker
        data[n // 3 :] = bytes(n - n // 3)
    elif damage == "zero_block":  # unwritten block, end marker present
        data[n // 3 : n - 2] = bytes(n - 2 - n // 3)
    else:  # a restart marker out of order inside the scan data
        start = bytes(data).index(b"\xff\xda")
        data[start + 40 : start + 42] = b"\xff\xd5"
    coco = basic_coco()
    coco["images"][0].update(file_name="a.jpg", width=160, height=120)
    folder = tmp_path / "train"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(bytes(data))
    with Image.open(folder / "a.jpg") as img:  # Pillow decodes it without a word
        img.load()
    split = _split(tmp_path, coco)
    assert split.problems["image_corrupt"] == 1
    assert split.problems.examples["image_corrupt"][0].startswith("image 1 'a.jpg'")
    assert 1 not in {i.image_id for i in split.images}


def test_intact_jpegs_pass_the_corruption_scan(tmp_path):
    for options in ({}, {"progressive": True}, {"optimize": True, "quality": 40}):
        buffer = io.BytesIO()
        Image.fromarray(np.full((40, 50, 3), 128, dtype=np.uint8)).save(buffer, format="JPEG", **options)
        assert images_module.jpeg_damage(buffer.getvalue()) is None


def _exif_image(path, width, height, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(np.zeros((height, width, 3), dtype=np.uint8)).save(path, format="JPEG", exif=exif)


@pytest.mark.parametrize(
    ("stored", "orientation", "listed", "counted"),
    [
        ((32, 32), 6, (32, 32), True),  # square and turned: the JSON size cannot tell the frames apart
        ((32, 24), 3, (32, 24), True),  # half turn: same size in both frames
        ((32, 24), 6, (24, 32), False),  # turned, and the JSON has the turned size: frames confirmed
        ((32, 24), 1, (32, 24), False),
    ],
)
def test_exif_rotation_the_size_cannot_confirm_is_a_warning(tmp_path, stored, orientation, listed, counted):
    coco = basic_coco()
    coco["images"][0].update(file_name="a.jpg", width=listed[0], height=listed[1])
    folder = tmp_path / "train"
    folder.mkdir()
    _exif_image(folder / "a.jpg", *stored, orientation)
    split = _split(tmp_path, coco)
    assert split.problems["image_orientation_ambiguous"] == int(counted)
    assert 1 in {i.image_id for i in split.images}  # used as read
    if counted:
        assert f"EXIF orientation {orientation}" in split.problems.examples["image_orientation_ambiguous"][0]


def test_new_problems_reach_inspect_json(tmp_path):
    coco = basic_coco()
    coco["annotations"].append({**coco["annotations"][0], "id": 99})
    coco["annotations"][1]["iscrowd"] = "0"
    write_split(tmp_path / "train", coco)
    report = inspect_dataset(tmp_path / "train", progress=False)
    problems = {p["kind"]: p for p in report["splits"][0]["problems"]}
    assert (
        problems["annotation_duplicate"]["count"] == 1
        and problems["annotation_duplicate"]["severity"] == "skipped"
    )
    assert problems["iscrowd_invalid"]["examples"] == ["annotation 11 (image 1): iscrowd = '0'"]
    assert report["schema_version"] == 1


# ------------------------------------------------------------------------------------- 6. confinement
def test_symlink_out_of_the_image_folder_is_skipped_unless_allowed(tmp_path):
    outside = tmp_path / "elsewhere" / "secret.png"
    write_image(outside, 32, 24)
    coco = basic_coco()
    write_split(tmp_path / "train", coco)
    (tmp_path / "train" / "b.png").unlink()
    (tmp_path / "train" / "b.png").symlink_to(outside)
    split = _load(tmp_path / "train")
    assert split.problems["image_outside_folder"] == 1
    example = split.problems.examples["image_outside_folder"][0]
    assert example.startswith("image 2 'b.png' resolves to ") and str(outside) in example
    assert "data.follow_symlinks" in example
    assert [i.image_id for i in split.images] == [1, 3]
    allowed = _load(tmp_path / "train", follow_symlinks=True)
    assert [i.image_id for i in allowed.images] == [1, 2, 3] and not allowed.problems["image_outside_folder"]
    config = DataConfig(root=tmp_path, follow_symlinks=True)
    assert len(build_train_dataset(config, progress=False).plan.images) == 3


def test_symlinked_image_folder_and_links_inside_it_are_fine(tmp_path):
    write_split(tmp_path / "real", basic_coco())
    (tmp_path / "train").symlink_to(tmp_path / "real")
    os.makedirs(tmp_path / "real" / "sub")
    (tmp_path / "real" / "sub" / "c.png").symlink_to(tmp_path / "real" / "c.png")
    split = _load(tmp_path / "train")
    assert not split.problems.counts and len(split.images) == 3


@pytest.mark.parametrize(
    ("where", "fragment"),
    [("images", "image entry #0"), ("categories", "category entry #0"), ("annotations", "annotation")],
)
def test_ids_beyond_64_bits_are_refused_at_load(tmp_path, where, fragment):
    coco = basic_coco()
    coco[where][0]["id"] = 2**63
    folder = tmp_path / "train"
    write_split(folder, coco)
    with pytest.raises(DataError) as info:
        _load(folder)
    assert info.value.kind == "id_out_of_range"
    assert str(folder / "_annotations.coco.json") in str(info.value) and fragment in str(info.value)
    assert str(2**63) in str(info.value)


def test_every_problem_kind_is_in_the_documented_catalogue():
    docs = (Path(__file__).resolve().parents[2] / "docs" / "data.md").read_text()
    assert [kind for kind in CATALOGUE if f"`{kind}`" not in docs] == []


@pytest.mark.parametrize(
    ("cut", "kind"), [(None, None), ("truncate", "image_truncated"), ("flip", "image_unreadable")]
)
def test_large_pngs_are_checked_without_decoding(tmp_path, monkeypatch, cut, kind):
    monkeypatch.setattr(images_module, "LARGE_IMAGE_PIXELS", 100)
    path = tmp_path / "big.png"
    pixels = np.random.default_rng(1).integers(0, 256, size=(60, 80, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    data = path.read_bytes()
    decoded = []
    load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(self) or load(self))
    if cut == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif cut == "flip":
        path.write_bytes(data[:2000] + bytes([data[2000] ^ 0xFF]) + data[2001:])
    if kind is None:
        assert images_module.probe_image(path).width == 80
    else:
        with pytest.raises(images_module.ImageFileError) as info:
            images_module.probe_image(path)
        assert info.value.kind == kind and str(path) in str(info.value)
    assert decoded == []  # never decoded at load


def test_distinct_uncut_prompts_with_equal_ids_are_only_logged(tmp_path, caplog):
    coco = basic_coco()
    coco["categories"] = [{"id": 1, "name": "car"}, {"id": 2, "name": "bus"}]  # both 3 letters: same ids
    plan = plan_queries(_split(tmp_path, coco))
    check_prompt_tokens(plan, _two_word_tokenize, "train.json")
    assert "the tokenizer gives the same ids to 'car' and 'bus'" in caplog.text
    assert not plan.problems["prompt_truncated"]
