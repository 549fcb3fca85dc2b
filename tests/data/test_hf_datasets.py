"""Hugging Face ``datasets`` input: local save_to_disk / parquet datasets made here, read as COCO splits."""

from __future__ import annotations

import io
import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from sam3tune.data import DataConfig, DataError, build_eval_dataset, find_splits, load_plan
from sam3tune.data.inspection import inspect_dataset
from tests.data.conftest import FRUITS_NUTS

datasets = pytest.importorskip("datasets")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SAM3TUNE_CACHE", str(tmp_path / "cache"))


def png(width: int, height: int, value: int = 90) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), value, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def detection_features(names=("cat", "dog"), category=None, **extra) -> datasets.Features:
    objects = {
        "id": datasets.List(datasets.Value("int64")),
        "bbox": datasets.List(datasets.List(datasets.Value("float64"), length=4)),
        "category": category or datasets.List(datasets.ClassLabel(names=list(names))),
        **extra,
    }
    return datasets.Features(
        {"image_id": datasets.Value("int64"), "image": datasets.Image(), "objects": objects}
    )


def small_dataset(boxes=None, features=None) -> datasets.Dataset:
    """Three 32x24 images; image 12 shows no object (a negative for both categories)."""
    boxes = boxes or [[[1, 2, 10, 8], [15, 5, 8, 8]], [[4, 4, 6, 6]], []]
    rows = {
        "image_id": [10, 11, 12],
        "image": [{"bytes": png(32, 24, v), "path": None} for v in (60, 90, 120)],
        "objects": [
            {"id": [1, 2], "bbox": boxes[0], "category": [0, 1]},
            {"id": [3], "bbox": boxes[1], "category": [0]},
            {"id": [], "bbox": boxes[2], "category": []},
        ],
    }
    return datasets.Dataset.from_dict(rows, features=features or detection_features())


def test_save_to_disk_folder_reads_as_coco_splits(tmp_path):
    ds = small_dataset()
    datasets.DatasetDict({"train": ds, "validation": ds, "test": ds}).save_to_disk(tmp_path / "hf")
    splits = find_splits(tmp_path / "hf")
    assert [s.name for s in splits] == ["train", "valid", "test"]
    plan = load_plan(DataConfig(root=tmp_path / "hf"), "train", progress=False)
    assert {c.category_id: c.prompt for c in plan.categories.values()} == {0: "cat", 1: "dog"}
    by_image = {q.image.image_id: q for q in plan.images}
    assert sorted(by_image) == [10, 11, 12]
    assert [o.box for o in by_image[10].positives[0]] == [(1.0, 2.0, 11.0, 10.0)]  # xywh -> xyxy pixels
    assert [o.annotation_id for o in by_image[10].positives[1]] == [2]
    assert by_image[12].negative_candidates == (0, 1)
    assert len(build_eval_dataset(DataConfig(root=tmp_path / "hf", resolution=32), progress=False)) == 3


def test_xyxy_boxes_with_the_setting_and_a_plain_refusal_without(tmp_path):
    boxes = [[[1, 2, 11, 10], [15, 5, 23, 13]], [[4, 4, 10, 10]], []]
    datasets.DatasetDict({"train": small_dataset(boxes)}).save_to_disk(tmp_path / "hf")
    plan = load_plan(DataConfig(root=tmp_path / "hf", hf_bbox_format="xyxy"), "train", progress=False)
    assert [o.box for o in plan.images[0].positives[0]] == [(1.0, 2.0, 11.0, 10.0)]
    # read as xywh, these boxes mostly leave the 32 x 24 images; all of them fit as xyxy
    boxes = [[[20, 14, 30, 22], [15, 5, 23, 13]], [[14, 4, 30, 20]], []]
    datasets.DatasetDict({"train": small_dataset(boxes)}).save_to_disk(tmp_path / "hf2")
    with pytest.raises(DataError, match=r"objects\.bbox read as xywh.*data\.hf_bbox_format=xyxy") as err:
        load_plan(DataConfig(root=tmp_path / "hf2"), "train", progress=False)
    assert err.value.kind == "hf_schema"


def test_parquet_folder_in_the_hub_layout(tmp_path):
    folder = tmp_path / "pq" / "data"
    folder.mkdir(parents=True)
    small_dataset().to_parquet(folder / "train-00000-of-00001.parquet")
    small_dataset().to_parquet(folder / "validation-00000-of-00001.parquet")
    assert [s.name for s in find_splits(tmp_path / "pq")] == ["train", "valid"]
    plan = load_plan(DataConfig(root=tmp_path / "pq"), "valid", train=False, progress=False)
    assert plan.num_targets == 3 and {c.name for c in plan.categories.values()} == {"cat", "dog"}


def test_category_names_as_strings(tmp_path):
    features = detection_features(category=datasets.List(datasets.Value("string")))
    rows = small_dataset().to_dict()
    rows["objects"] = [
        {**o, "category": [["zebra", "ant"][c] for c in o["category"]]} for o in rows["objects"]
    ]
    rows["image"] = [{"bytes": png(32, 24), "path": None}] * 3
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(tmp_path / "hf")
    plan = load_plan(DataConfig(root=tmp_path / "hf"), "train", progress=False)
    assert {c.category_id: c.name for c in plan.categories.values()} == {0: "ant", 1: "zebra"}  # sorted names


def test_written_once_then_reused_and_rewritten_when_the_dataset_changes(tmp_path):
    datasets.DatasetDict({"train": small_dataset()}).save_to_disk(tmp_path / "hf")
    first = find_splits(tmp_path / "hf")[0].annotation_file
    stamp = first.stat().st_mtime_ns
    assert find_splits(tmp_path / "hf")[0].annotation_file == first and first.stat().st_mtime_ns == stamp
    other = small_dataset([[[2, 2, 5, 5], [15, 5, 8, 8]], [[4, 4, 6, 6]], []])
    datasets.DatasetDict({"train": other}).save_to_disk(tmp_path / "hf2")
    (tmp_path / "hf").rename(tmp_path / "old")
    (tmp_path / "hf2").rename(tmp_path / "hf")
    second = find_splits(tmp_path / "hf")[0].annotation_file
    assert second != first
    assert json.loads(second.read_text())["annotations"][0]["bbox"] == [2, 2, 5, 5]


def _save(tmp_path, features, rows) -> str:
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(tmp_path / "bad")
    return str(tmp_path / "bad")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ("no_image", "'image'"),
        ("image_as_text", "column 'image'"),
        ("no_objects", "'objects'"),
        ("no_bbox", "'bbox'"),
        ("ids_without_names", r"objects\.category"),
        ("uneven", r"objects\.category has 1 entries but objects\.bbox has 2"),
        ("duplicate_image_id", "image_id 10 appears in rows 0 and 1"),
    ],
)
def test_bad_schemas_are_refused_naming_the_field(tmp_path, change, field):
    rows = small_dataset().to_dict()
    rows["image"] = [{"bytes": png(32, 24), "path": None}] * 3
    features = detection_features()
    if change == "no_image":
        del rows["image"], features["image"]
    elif change == "image_as_text":
        rows["image"] = ["a.png", "b.png", "c.png"]
        features["image"] = datasets.Value("string")
    elif change == "no_objects":
        rows["boxes"] = rows.pop("objects")
        features["boxes"] = features.pop("objects")
    elif change == "no_bbox":
        rows["objects"] = [{"category": o["category"]} for o in rows["objects"]]
        features["objects"] = {"category": features["objects"]["category"]}
    elif change == "ids_without_names":
        features["objects"]["category"] = datasets.List(datasets.Value("int64"))
    elif change == "uneven":
        rows["objects"][0]["category"] = [0]
    elif change == "duplicate_image_id":
        rows["image_id"] = [10, 10, 12]
    root = _save(tmp_path, features, rows)
    with pytest.raises(DataError, match=field) as err:
        find_splits(root)
    assert err.value.kind == "hf_schema"
    report = inspect_dataset(root)  # inspect reports it instead of failing
    assert report["ok"] is False and report["error"]["kind"] == "hf_schema"


def test_objects_values_the_coco_reader_checks_are_counted_per_annotation(tmp_path):
    boxes = [[[1, 2, 10, 8], [15, 5, 0, 8]], [[4, 4, 6, 6]], []]  # a zero-width box
    datasets.DatasetDict({"train": small_dataset(boxes)}).save_to_disk(tmp_path / "hf")
    plan = load_plan(DataConfig(root=tmp_path / "hf"), "train", progress=False)
    assert plan.problems.counts["box_nonpositive"] == 1
    assert "annotation 2 (image 10)" in plan.problems.examples["box_nonpositive"][0]


def test_missing_datasets_package_says_how_to_install(tmp_path, monkeypatch):
    datasets.DatasetDict({"train": small_dataset()}).save_to_disk(tmp_path / "hf")
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(DataError, match=r"sam3tune\[datasets\]") as err:
        find_splits(tmp_path / "hf")
    assert err.value.kind == "hf_unavailable"


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (
            ConnectionError("Couldn't reach 'org/x' on the Hub (OfflineModeIsEnabled)"),
            "not in the datasets cache",
        ),
        (
            datasets.exceptions.DatasetNotFoundError("Dataset 'org/x' doesn't exist on the Hub"),
            "no dataset 'org/x' on the Hugging Face Hub: check the id",
        ),
        (
            datasets.exceptions.DatasetNotFoundError("Dataset 'org/x' is a gated dataset on the Hub."),
            "gated dataset: accept its conditions on https://huggingface.co/datasets/org/x",
        ),
    ],
)
def test_hub_failures_say_what_to_do(monkeypatch, raised, expected):
    def fail(*args, **kwargs):
        raise raised

    monkeypatch.setattr(datasets, "load_dataset", fail)
    with pytest.raises(DataError, match=expected) as err:
        find_splits("hf:org/x")
    assert err.value.kind == "hf_unavailable"
    with pytest.raises(DataError, match="not a Hub dataset id"):
        find_splits("hf:../x")


def test_hub_id_goes_through_load_dataset(tmp_path, monkeypatch):
    calls = []

    def load(name, *args, **kwargs):
        calls.append(name)
        return datasets.DatasetDict({"train": small_dataset()})

    monkeypatch.setattr(datasets, "load_dataset", load)
    plan = load_plan(DataConfig(root="hf:org/shapes"), "train", progress=False)
    assert calls == ["org/shapes"] and plan.num_targets == 3


# ---- the shared real dataset: an HF copy reads as the same queries and targets ----


def fruits_as_hf(folder) -> datasets.Dataset:
    """fruits_nuts' train split as a Hugging Face dataset: COCO ids kept, boxes xywh, polygons kept."""
    coco = json.loads((folder / "_annotations.coco.json").read_text())
    names = [c["name"] for c in sorted(coco["categories"], key=lambda c: c["id"])]
    class_of = {c["id"]: names.index(c["name"]) for c in coco["categories"]}
    rows = {"image_id": [], "image": [], "objects": []}
    for image in sorted(coco["images"], key=lambda i: i["id"]):
        anns = [a for a in coco["annotations"] if a["image_id"] == image["id"]]
        rows["image_id"].append(image["id"])
        rows["image"].append({"bytes": (folder / image["file_name"]).read_bytes(), "path": None})
        rows["objects"].append(
            {
                "id": [a["id"] for a in anns],
                "bbox": [a["bbox"] for a in anns],
                "category": [class_of[a["category_id"]] for a in anns],
                "segmentation": [a["segmentation"] for a in anns],
            }
        )
    polygons = datasets.List(datasets.List(datasets.List(datasets.Value("float64"))))
    features = detection_features(names, segmentation=polygons)
    return datasets.Dataset.from_dict(rows, features=features)


@pytest.mark.skipif(not FRUITS_NUTS.is_dir(), reason="shared fruits_nuts dataset not present")
def test_fruits_nuts_hf_copy_gives_the_same_queries_and_targets(tmp_path):
    datasets.DatasetDict({"train": fruits_as_hf(FRUITS_NUTS / "train")}).save_to_disk(tmp_path / "hf")
    config = {"resolution": 112, "mask_resolution": 56}
    coco = build_eval_dataset(DataConfig(root=FRUITS_NUTS, val="train", **config), progress=False)
    hf = build_eval_dataset(DataConfig(root=tmp_path / "hf", val="train", **config), progress=False)
    assert len(coco) == len(hf) == 18
    assert coco.plan.num_targets == hf.plan.num_targets == 165
    assert (coco.plan.num_positive, coco.plan.num_negative) == (hf.plan.num_positive, hf.plan.num_negative)
    for i in range(len(coco)):
        a, b = coco[i], hf[i]
        assert a.image_id == b.image_id and a.orig_size == b.orig_size
        assert torch.equal(a.image, b.image)
        assert a.prompts == b.prompts
        for ta, tb in zip(a.targets, b.targets, strict=True):
            assert torch.equal(ta["boxes"], tb["boxes"])
            assert torch.equal(ta["masks"], tb["masks"]) and torch.equal(
                ta["is_valid_mask"], tb["is_valid_mask"]
            )
