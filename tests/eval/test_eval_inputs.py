"""Issue 14, class 5: eval inputs that cannot be scored are reported with the file and the entry, and
``--out`` never mixes a new report into an old one."""

import json

import pytest
from test_eval_command import _case, _rect

from sam3tune.cli import main
from sam3tune.eval.api import evaluate_results_file
from sam3tune.eval.coco_results import ResultsError, load_coco_results
from sam3tune.eval.rle import rle_problem


def _bad(**changes):
    entry = {
        "image_id": 1,
        "category_id": 1,
        "bbox": [0, 0, 10, 10],
        "score": 0.9,
        "segmentation": _rect(0, 0, 10, 10),
    }
    entry.update(changes)
    return entry


BAD = [  # (entry, words of the message)
    (_bad(score=1.7), "score must be in [0, 1]"),
    (_bad(score=-0.1), "score must be in [0, 1]"),
    (_bad(score="0.9"), "score must be a finite number"),
    (_bad(bbox=[0, 0, "10", 10]), "bbox must be [x, y, width, height] of finite numbers"),
    (_bad(bbox=[0, 0, True, 10]), "finite numbers"),
    (_bad(bbox=[0, 0, None, 10]), "finite numbers"),
    (_bad(segmentation={"size": [30, 40], "counts": "~~~~"}), "not a valid compressed RLE string"),
    (_bad(segmentation={"size": [30, 40], "counts": 12}), "compressed string or a list of integers"),
    (_bad(segmentation={"size": [30], "counts": "00"}), "size must be [height, width]"),
    (_bad(segmentation={"size": [30, 40], "counts": [600, 500]}), "cover 1100 pixels, but its size [30, 40]"),
    (
        _bad(segmentation={"size": [20, 40], "counts": _rect(0, 0, 10, 10)["counts"]}),
        "an RLE of another image size",
    ),
    (_bad(segmentation={"size": [30, 40], "counts": [-5, 1205]}), "negative run length"),
    (_bad(segmentation=[[0, 0, 10, 0, 10, 10]]), "segmentation must be an RLE"),
]  # fmt: skip


@pytest.mark.parametrize(("entry", "message"), BAD, ids=[m for _, m in BAD])
def test_a_malformed_prediction_names_the_file_and_the_entry(tmp_path, entry, message):
    gt, preds = _case()
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "preds.json").write_text(json.dumps([*preds, entry]))
    with pytest.raises(ResultsError) as caught:
        evaluate_results_file(tmp_path / "preds.json", tmp_path / "gt.json", tmp_path / "out")
    assert f"predictions {tmp_path / 'preds.json'}, entry 3: " in str(caught.value)
    assert message in str(caught.value)


def test_a_mask_of_another_image_size_or_an_unknown_image_is_named(tmp_path):
    gt, preds = _case()
    gt["images"][1]["height"] = 31  # image 2 is 31 x 40; its prediction's RLE is 30 x 40
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "preds.json").write_text(json.dumps(preds))
    with pytest.raises(
        ResultsError, match=r"entry 1: segmentation size \[30, 40\] is not the size \[31, 40\] of image 2"
    ):
        evaluate_results_file(tmp_path / "preds.json", tmp_path / "gt.json", tmp_path / "out")
    gt, preds = _case()
    preds[2]["image_id"] = 7
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "preds.json").write_text(json.dumps(preds))
    with pytest.raises(ResultsError, match="entry 2: image_id 7 is not in the ground truth"):
        evaluate_results_file(tmp_path / "preds.json", tmp_path / "gt.json", tmp_path / "out")


def test_valid_rles_pass_the_check(tmp_path):
    _, preds = _case()
    assert all(rle_problem(p["segmentation"]) is None for p in preds)
    assert rle_problem({"size": [2, 3], "counts": [1, 4, 1]}) is None  # uncompressed COCO RLE
    (tmp_path / "p.json").write_text(json.dumps(preds))
    assert load_coco_results(tmp_path / "p.json") == preds


def test_eval_out_is_refused_when_it_holds_a_report_unless_overwrite(tmp_path, capsys):
    gt, preds = _case()
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "preds.json").write_text(json.dumps(preds))
    argv = ["eval", "--predictions", str(tmp_path / "preds.json"), "--gt", str(tmp_path / "gt.json")]
    assert main([*argv, "--out", str(tmp_path / "report")]) == 0
    report = (tmp_path / "report" / "eval.json").read_bytes()
    assert main([*argv, "--out", str(tmp_path / "report")]) == 2
    assert "already holds results (eval.json, eval.md)" in capsys.readouterr().err
    assert (tmp_path / "report" / "eval.json").read_bytes() == report
    assert main([*argv, "--out", str(tmp_path / "report"), "--overwrite"]) == 0
    (tmp_path / "file").write_text("x")
    assert main([*argv, "--out", str(tmp_path / "file")]) == 2
    assert "exists and is not a folder" in capsys.readouterr().err
