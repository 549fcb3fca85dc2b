"""``sam3tune data inspect`` / ``synth`` through the CLI, and the inspect JSON schema."""

from __future__ import annotations

import json

import pytest

from sam3tune.cli import main
from tests.data.conftest import FRUITS_NUTS, basic_coco, write_split

SPLIT_KEYS = {
    "name",
    "annotation_file",
    "image_dir",
    "ok",
    "error",
    "images",
    "annotations",
    "masks",
    "categories",
    "queries",
    "tiling",
    "problems",
    "shots",
}


def _inspect(capsys, *args):
    status = main(["data", "inspect", *map(str, args), "--json"])
    return status, json.loads(capsys.readouterr().out)


@pytest.mark.skipif(not FRUITS_NUTS.is_dir(), reason="shared fruits_nuts dataset not present")
def test_inspect_fruits_nuts_json(capsys):
    status, report = _inspect(capsys, FRUITS_NUTS)
    assert status == 0 and report["ok"] and report["schema_version"] == 1
    assert set(report) == {"schema_version", "path", "ok", "settings", "error", "splits"}
    (split,) = report["splits"]
    assert set(split) == SPLIT_KEYS
    assert split["images"] == {"listed": 18, "usable": 18, "with_queries": 18}
    assert split["annotations"] == {"listed": 165, "usable": 165, "crowd": 0, "targets": 165}
    assert split["masks"] == {"polygon": 165, "rle": 0, "none": 0}
    assert split["queries"] == {"positive": 50, "negative": 4, "negatives": "all", "exemplar": 0}
    assert [(c["name"], c["instances"], c["images"]) for c in split["categories"]] == [
        ("date", 71, 17),
        ("fig", 41, 16),
        ("hazelnut", 53, 17),
    ]
    assert split["problems"] == [] and split["shots"] is None


def test_inspect_reports_problems_and_errors_per_split(tmp_path, capsys):
    coco = basic_coco()
    coco["annotations"][0]["bbox"] = [1, 1, 0, 3]
    write_split(tmp_path / "train", coco)
    broken = basic_coco()
    broken["images"][1]["id"] = 1
    write_split(tmp_path / "valid", broken)
    status, report = _inspect(capsys, tmp_path)
    assert status == 1 and not report["ok"]
    train, valid = report["splits"]
    assert train["ok"] and train["problems"][0]["kind"] == "box_nonpositive"
    assert train["problems"][0]["count"] == 1 and train["problems"][0]["examples"][0].startswith(
        "annotation 10"
    )
    assert set(train["problems"][0]) == {"kind", "severity", "count", "message", "examples"}
    assert not valid["ok"] and valid["error"]["kind"] == "duplicate_image_id"
    assert "image id 1 appears twice" in valid["error"]["message"] and valid["images"] is None


def test_inspect_text_and_missing_path(tmp_path, capsys):
    write_split(tmp_path / "train", basic_coco())
    assert main(["data", "inspect", "negatives=1", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "queries: 3 positive, 2 negative (negatives: 1)" in text and text.rstrip().endswith("OK")
    status, report = _inspect(capsys, tmp_path / "nowhere")
    error = report["error"]
    assert status == 1 and error["kind"] == "dataset_missing" and "nowhere" in error["message"]


def test_synth_then_inspect(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["data", "synth", str(out), "--images", "8", "seed=2", "image_size=[64,64]"]) == 0
    assert "train: 8 images" in capsys.readouterr().out
    status, report = _inspect(capsys, out)
    assert status == 0 and [s["name"] for s in report["splits"]] == ["train", "valid", "test"]
    assert [s["images"]["listed"] for s in report["splits"]] == [8, 2, 2]
    placeholder = report["splits"][0]["categories"][0]
    assert placeholder["skipped"] == "category_placeholder" and not placeholder["queried"]
