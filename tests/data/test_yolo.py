"""YOLO detect / segment folders: layouts, class names, every bad-input rule, and the same queries and
targets as the COCO original (fruits_nuts converted to YOLO)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from sam3tune.data import (
    DataConfig,
    DataError,
    build_eval_dataset,
    find_splits,
    load_split,
    plan_queries,
    resolve_split,
)
from sam3tune.data.inspection import inspect_dataset
from tests.data.coco_to_yolo import coco_split_to_yolo
from tests.data.conftest import FRUITS_NUTS, write_image

needs_fruits_nuts = pytest.mark.skipif(not FRUITS_NUTS.is_dir(), reason="fruits_nuts not available")


def _yolo(root, labels: dict[str, str], names=("cat", "dog"), split="train", images=None, size=(40, 20)):
    """An Ultralytics-layout dataset: 40x20 images named in ``images`` (default: the label stems + .png)."""
    (root / "labels" / split).mkdir(parents=True, exist_ok=True)
    for stem, text in labels.items():
        (root / "labels" / split / f"{stem}.txt").write_text(text)
    for name in images if images is not None else [f"{s}.png" for s in labels]:
        write_image(root / "images" / split / name, *size)
    (root / "data.yaml").write_text(yaml.safe_dump({split: f"images/{split}", "names": list(names)}))
    return root


def _load(root, split="train"):
    return load_split(resolve_split(root, split), progress=False)


def _objects(split):
    return {img.file_name: split.objects[img.image_id] for img in split.images}


def test_box_and_polygon_lines_mixed_in_one_file(tmp_path):
    root = _yolo(tmp_path, {"a": "0 0.5 0.5 0.5 0.5\n1 0.1 0.1 0.3 0.1 0.3 0.6 0.1 0.6\n"})
    split = _load(root)
    assert split.categories == {0: "cat", 1: "dog"}
    box, polygon = _objects(split)["a.png"]
    assert (box.category_id, polygon.category_id) == (0, 1)
    assert box.box == pytest.approx((10.0, 5.0, 30.0, 15.0))
    assert box.segmentation is None  # a box line has no mask
    assert polygon.box == pytest.approx((4.0, 2.0, 12.0, 12.0))  # the polygon's bounds in pixels
    assert polygon.segmentation == [pytest.approx([4.0, 2.0, 12.0, 2.0, 12.0, 12.0, 4.0, 12.0])]
    assert not split.problems.counts


def test_images_without_labels_are_negatives_for_every_class(tmp_path):
    root = _yolo(tmp_path, {"a": "0 0.5 0.5 0.5 0.5\n", "b": ""}, images=["a.png", "b.png", "c.png"])
    plan = plan_queries(_load(root), keep_unused_categories=True)
    queries = {q.image.file_name: q for q in plan.images}
    assert set(queries["a.png"].positives) == {0}
    assert queries["a.png"].negative_candidates == (1,)
    assert queries["b.png"].positives == {} and queries["b.png"].negative_candidates == (0, 1)
    assert queries["c.png"].positives == {} and queries["c.png"].negative_candidates == (0, 1)


def test_every_bad_line_is_counted_with_file_and_line(tmp_path):
    text = "\n".join(
        [
            "0 0.5 0.5 0.5 0.5",  # 1: fine
            "0 0.9 0.5 0.4 0.2",  # 2: right edge beyond 1 -> clipped
            "0 1.5 1.5 0.2 0.2",  # 3: entirely outside
            "7 0.5 0.5 0.1 0.1",  # 4: unknown class
            "0 abc 0.5 0.1 0.1",  # 5: not a number
            "1",  # 6: class without coordinates
            "",  # 7: blank line: ignored
            "1 0.1 0.1 0.2 0.2 0.3",  # 8: odd coordinate count
            "1 0.1 0.1",  # 9: one point
            "0 0.5 0.5 0 0.1",  # 10: zero width
            "1 0.1 0.1 0.2 0.2 0.3 0.3",  # 11: polygon on a line: no area
            "x 0.5 0.5 0.1 0.1",  # 12: class is not a number
            "1 -0.5 0.2 0.5 0.2 0.5 0.8",  # 13: polygon partly outside -> clipped
        ]
    )
    root = _yolo(tmp_path, {"a": text})
    (root / "labels" / "train" / "orphan.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    split = _load(root)
    label = root / "labels" / "train" / "a.txt"
    counts = dict(split.problems.counts)
    assert counts == {
        "box_outside_image": 2,
        "box_entirely_outside": 1,
        "annotation_missing_category": 1,
        "label_line_malformed": 3,
        "polygon_invalid": 2,
        "box_nonpositive": 2,
        "label_without_image": 1,
    }
    examples = split.problems.examples
    assert examples["box_outside_image"][0].startswith(f"{label} line 2:")
    assert examples["box_outside_image"][1].startswith(f"{label} line 13:")
    assert examples["box_entirely_outside"][0].startswith(f"{label} line 3:")
    assert (
        "class 7" in examples["annotation_missing_category"][0]
        and "line 4" in examples["annotation_missing_category"][0]
    )
    assert [e.split(":")[0] for e in examples["label_line_malformed"]] == [
        f"{label} line 5",
        f"{label} line 6",
        f"{label} line 12",
    ]
    assert [e.split(":")[0] for e in examples["polygon_invalid"]] == [f"{label} line 8", f"{label} line 9"]
    assert str(root / "labels" / "train" / "orphan.txt") in examples["label_without_image"][0]
    kept = _objects(split)["a.png"]
    assert [o.box for o in kept] == [
        pytest.approx((10.0, 5.0, 30.0, 15.0)),
        pytest.approx((28.0, 8.0, 40.0, 12.0)),  # clipped at x = 40
        pytest.approx((0.0, 4.0, 20.0, 16.0)),  # polygon clipped at x = 0
    ]
    assert kept[2].segmentation == [pytest.approx([0.0, 4.0, 20.0, 4.0, 20.0, 16.0])]


def test_unreadable_label_file_skips_the_image_instead_of_making_it_negative(tmp_path):
    root = _yolo(tmp_path, {"a": "0 0.5 0.5 0.5 0.5\n", "b": "0 0.5 0.5 0.5 0.5\n"})
    (root / "labels" / "train" / "b.txt").write_bytes(b"\xff\xfe\x00 not text")
    split = _load(root)
    assert [i.file_name for i in split.images] == ["a.png"]
    assert split.problems["label_file_unreadable"] == 1
    assert "b.txt" in split.problems.examples["label_file_unreadable"][0]


def test_two_images_sharing_a_label_file_are_skipped(tmp_path):
    root = _yolo(
        tmp_path, {"a": "0 0.5 0.5 0.5 0.5\n", "b": "1 0.5 0.5 0.5 0.5\n"}, images=["a.png", "a.jpg", "b.png"]
    )
    split = _load(root)
    assert [i.file_name for i in split.images] == ["b.png"]
    assert split.problems["image_label_ambiguous"] == 2


def test_unreadable_image_is_counted(tmp_path):
    root = _yolo(tmp_path, {"a": "0 0.5 0.5 0.5 0.5\n", "b": "0 0.5 0.5 0.5 0.5\n"})
    (root / "images" / "train" / "b.png").write_bytes(b"not a png")
    split = _load(root)
    assert [i.file_name for i in split.images] == ["a.png"]
    assert split.problems["image_unreadable"] == 1


@pytest.mark.parametrize(
    ("names", "fragment"),
    [
        ({"names": []}, "'names' must be a non-empty list"),
        ({"nc": 3, "names": ["a", "b"]}, "nc is 3 but names lists 2"),
        ({"names": {"x": "a"}}, "names entry 'x'"),
        ({"nc": 2}, "'names' must be"),
        ({"names": ["person"], "kpt_shape": [17, 3]}, "keypoint (pose)"),
    ],
)
def test_bad_class_names_are_errors_naming_data_yaml(tmp_path, names, fragment):
    _yolo(tmp_path, {"a": "0 0.5 0.5 0.5 0.5\n"})
    (tmp_path / "data.yaml").write_text(yaml.safe_dump({"train": "images/train", **names}))
    with pytest.raises(DataError) as info:
        find_splits(tmp_path)
    assert info.value.kind == "layout_invalid"
    assert str(tmp_path / "data.yaml") in str(info.value) and fragment in str(info.value)


def test_names_as_mapping_keep_their_ids(tmp_path):
    _yolo(tmp_path, {"a": "3 0.5 0.5 0.5 0.5\n"})
    (tmp_path / "data.yaml").write_text("train: images/train\nnames:\n  0: cat\n  3: traffic_light\n")
    plan = plan_queries(_load(tmp_path))
    assert {c.category_id: c.prompt for c in plan.categories.values()} == {3: "traffic light"}


def test_invalid_yaml_is_an_error(tmp_path):
    _yolo(tmp_path, {"a": "0 0.5 0.5 0.5 0.5\n"})
    (tmp_path / "data.yaml").write_text("names: [a, b\n")
    with pytest.raises(DataError, match="cannot read the YAML file"):
        find_splits(tmp_path)


def test_split_folders_must_stay_inside_the_root(tmp_path):
    root = tmp_path / "ds"
    _yolo(root, {"a": "0 0.5 0.5 0.5 0.5\n"})
    write_image(tmp_path / "elsewhere" / "images" / "x.png", 8, 8)
    (tmp_path / "elsewhere" / "labels").mkdir()
    (root / "data.yaml").write_text(
        yaml.safe_dump({"train": str(tmp_path / "elsewhere" / "images"), "names": ["a"]})
    )
    with pytest.raises(DataError) as info:
        find_splits(root)
    assert info.value.kind == "path_escapes_root"
    (root / "data.yaml").write_text(yaml.safe_dump({"train": "images/nowhere", "names": ["a"]}))
    with pytest.raises(DataError, match="no such image folder"):
        find_splits(root)


def test_missing_labels_folder_is_an_error(tmp_path):
    _yolo(tmp_path, {"a": "0 0.5 0.5 0.5 0.5\n"})
    write_image(tmp_path / "images" / "val" / "v.png", 8, 8)
    (tmp_path / "data.yaml").write_text(
        yaml.safe_dump({"train": "images/train", "val": "images/val", "names": ["a"]})
    )
    with pytest.raises(DataError) as info:
        find_splits(tmp_path)
    assert info.value.kind == "layout_invalid" and str(tmp_path / "labels" / "val") in str(info.value)


def test_unsplit_folder_with_classes_txt_serves_every_split(tmp_path):
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_text("1 0.5 0.5 0.5 0.5\n")
    write_image(tmp_path / "images" / "a.png", 40, 20)
    (tmp_path / "classes.txt").write_text("cat\ndog\n\n")
    for split in ("train", "valid"):
        files = resolve_split(tmp_path, split)
        assert files.image_dir == tmp_path / "images"
        assert load_split(files, progress=False).categories == {0: "cat", 1: "dog"}
    (tmp_path / "classes.txt").unlink()
    with pytest.raises(DataError, match="no class names"):
        find_splits(tmp_path)


def test_roboflow_layout_without_yaml_paths_uses_split_folders(tmp_path):
    for split in ("train", "valid"):
        (tmp_path / split / "labels").mkdir(parents=True)
        (tmp_path / split / "labels" / "a.txt").write_text("0 0.5 0.5 0.5 0.5\n")
        write_image(tmp_path / split / "images" / "a.png", 40, 20)
    (tmp_path / "data.yaml").write_text(yaml.safe_dump({"nc": 1, "names": ["cat"]}))
    assert [s.name for s in find_splits(tmp_path)] == ["train", "valid"]
    assert resolve_split(tmp_path, "val").image_dir == tmp_path / "valid" / "images"


def test_inspect_reports_a_yolo_dataset(tmp_path):
    _yolo(tmp_path, {"a": "0 0.5 0.5 0.5 0.5\n1 0.1 0.1 0.3 0.1 0.3 0.6\n9 0.5 0.5 0.1 0.1\n"})
    report = inspect_dataset(tmp_path, progress=False)
    assert report["ok"]
    (split,) = report["splits"]
    assert split["name"] == "train" and split["annotation_file"] == str(tmp_path / "labels" / "train")
    assert split["annotations"]["usable"] == 2
    assert split["masks"] == {"polygon": 1, "rle": 0, "none": 1}
    assert [p["kind"] for p in split["problems"]] == ["annotation_missing_category"]


@needs_fruits_nuts
@pytest.mark.parametrize("layout", ["ultralytics", "roboflow"])
def test_fruits_nuts_as_yolo_gives_the_same_queries_and_targets(tmp_path, layout):
    coco_split_to_yolo(FRUITS_NUTS / "train", tmp_path / "yolo", layout=layout)
    config = dict(resolution=96, mask_resolution=96)
    coco = build_eval_dataset(DataConfig(root=FRUITS_NUTS, val="train", **config), progress=False)
    yolo = build_eval_dataset(DataConfig(root=tmp_path / "yolo", val="train", **config), progress=False)
    assert (yolo.plan.num_positive, yolo.plan.num_negative, yolo.plan.num_targets) == (50, 4, 165)
    assert (coco.plan.num_positive, coco.plan.num_negative, coco.plan.num_targets) == (50, 4, 165)
    by_name = {yolo.plan.images[i].image.file_name: i for i in range(len(yolo))}
    assert len(by_name) == len(coco) == 18
    worst_box, worst_iou = 0.0, 1.0
    for index in range(len(coco)):
        expected = coco[index]
        got = yolo[by_name[coco.plan.images[index].image.file_name]]
        assert got.prompts == expected.prompts
        assert got.orig_size == expected.orig_size
        assert torch_equal(got.image, expected.image)
        for t_got, t_exp in zip(got.targets, expected.targets, strict=True):
            assert t_got["boxes"].shape == t_exp["boxes"].shape
            if len(t_exp["boxes"]):
                # COCO boxes are whole pixels, YOLO boxes are the polygon bounds: < 1 px apart
                worst_box = max(worst_box, float((t_got["boxes"] - t_exp["boxes"]).abs().max()))
                inter = (t_got["masks"] & t_exp["masks"]).sum((1, 2)).float()
                union = (t_got["masks"] | t_exp["masks"]).sum((1, 2)).float()
                worst_iou = min(worst_iou, float((inter / union).min()))
            assert t_got["is_valid_mask"].all() and t_exp["is_valid_mask"].all()
    assert 0 < worst_box < 1.0 / 600  # one pixel of the 800x600 images
    assert worst_iou == 1.0  # the same polygons rasterise to the same masks


def torch_equal(a, b) -> bool:
    return bool((a == b).all())


@needs_fruits_nuts
def test_convert_yolo_to_coco_round_trip(tmp_path, capsys):
    from sam3tune.cli import main

    coco_split_to_yolo(FRUITS_NUTS / "train", tmp_path / "yolo")
    assert (
        main(["data", "convert", str(tmp_path / "yolo"), "--to", "coco", "--out", str(tmp_path / "coco")])
        == 0
    )
    written = json.loads((tmp_path / "coco" / "train" / "_annotations.coco.json").read_text())
    original = json.loads((FRUITS_NUTS / "train" / "_annotations.coco.json").read_text())
    assert len(written["images"]) == 18 and len(written["annotations"]) == 165
    assert [c["name"] for c in written["categories"]] == ["date", "fig", "hazelnut"]
    assert {i["file_name"] for i in written["images"]} == {i["file_name"] for i in original["images"]}
    assert all((tmp_path / "coco" / "train" / i["file_name"]).is_file() for i in written["images"])
    # the written export reads back as the same split, segmentations and areas included
    back = load_split(find_splits(tmp_path / "coco")[0], progress=False)
    assert sum(len(v) for v in back.objects.values()) == 165 and not back.problems.counts
    areas = sorted(a["area"] for a in written["annotations"])
    expected = sorted(a["area"] for a in original["annotations"])
    assert np.allclose(areas, expected, rtol=0.03)
    assert (
        main(["data", "convert", str(tmp_path / "yolo"), "--to", "coco", "--out", str(tmp_path / "coco")])
        == 2
    )
    assert "not empty" in capsys.readouterr().err


def test_data_inspect_command_on_a_yolo_root(tmp_path, capsys):
    from sam3tune.cli import main

    _yolo(tmp_path, {"a": "0 0.5 0.5 0.5 0.5\n1 0.1 0.1 0.3 0.1 0.3 0.6\n", "b": "cat 0.5 0.5 0.1 0.1\n"})
    assert main(["data", "inspect", str(tmp_path), "--json"]) == 0
    (split,) = json.loads(capsys.readouterr().out)["splits"]
    assert split["queries"] == {"positive": 2, "negative": 2, "negatives": "all", "exemplar": 0}
    assert split["problems"][0]["kind"] == "label_line_malformed"
    assert split["problems"][0]["examples"][0].startswith(f"{tmp_path / 'labels' / 'train' / 'b.txt'} line 1")


def test_roboflow_parent_paths_prefer_the_folder_inside_the_root(tmp_path):
    root = tmp_path / "ds"
    for base in (root, tmp_path):  # a sibling train/images outside the root must not be taken
        (base / "train" / "labels").mkdir(parents=True)
        write_image(base / "train" / "images" / "a.png", 40, 20)
    (root / "train" / "labels" / "a.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    (root / "data.yaml").write_text(yaml.safe_dump({"train": "../train/images", "names": ["cat"]}))
    (split,) = find_splits(root)
    assert split.image_dir == root / "train" / "images" and split.annotation_file == root / "train" / "labels"


def test_labels_folder_is_found_below_the_root_only(tmp_path):
    root = tmp_path / "images" / "ds"  # an 'images' folder above the dataset must not be used
    write_image(root / "train" / "a.png", 8, 8)
    (root / "data.yaml").write_text(yaml.safe_dump({"train": "train", "names": ["cat"]}))
    with pytest.raises(DataError, match="no 'images' component below"):
        find_splits(root)


def test_split_from_a_list_of_folders(tmp_path):
    for folder, stem in (("train2012", "a"), ("train2007", "b")):
        (tmp_path / "labels" / folder).mkdir(parents=True)
        (tmp_path / "labels" / folder / f"{stem}.txt").write_text("0 0.5 0.5 0.5 0.5\n")
        write_image(tmp_path / "images" / folder / f"{stem}.png", 40, 20)
    (tmp_path / "labels" / "train2007" / "orphan.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    (tmp_path / "data.yaml").write_text(
        yaml.safe_dump({"train": ["images/train2012", "images/train2007"], "names": ["cat"]})
    )
    split = _load(tmp_path)
    assert [i.file_name for i in split.images] == ["images/train2007/b.png", "images/train2012/a.png"]
    assert sum(len(v) for v in split.objects.values()) == 2
    assert split.problems["label_without_image"] == 1


def test_split_from_an_image_list_file(tmp_path):
    _yolo(tmp_path, {"a": "0 0.5 0.5 0.5 0.5\n", "b": "0 0.5 0.5 0.5 0.5\n", "c": "0 0.5 0.5 0.5 0.5\n"})
    (tmp_path / "train.txt").write_text(
        "./images/train/a.png\nimages/train/b.png\n\n./images/train/gone.png\n"
    )
    (tmp_path / "data.yaml").write_text(yaml.safe_dump({"train": "train.txt", "names": ["cat", "dog"]}))
    split = _load(tmp_path)
    assert [i.file_name for i in split.images] == ["images/train/a.png", "images/train/b.png"]  # not c
    assert split.problems["image_missing"] == 1
    assert f"{tmp_path / 'train.txt'} line 4" in split.problems.examples["image_missing"][0]
    (tmp_path / "train.txt").write_text("../elsewhere/images/x.png\n")
    with pytest.raises(DataError) as info:
        _load(tmp_path)
    assert info.value.kind == "path_escapes_root" and "line 1" in str(info.value)
