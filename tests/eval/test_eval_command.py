import json

import numpy as np
import pytest

from sam3tune.cli import main
from sam3tune.eval.api import evaluate_results_file
from sam3tune.eval.config import EvalConfig
from sam3tune.eval.evaluate import evaluate_predictions
from sam3tune.eval.report import markdown_report
from sam3tune.eval.rle import encode_masks


def _rect(x, y, w, h):
    mask = np.zeros((1, 30, 40), dtype=bool)
    mask[0, y : y + h, x : x + w] = True
    return encode_masks(mask)[0]


def _case():
    gt = {
        "images": [{"id": i, "height": 30, "width": 40, "file_name": f"{i}.jpg"} for i in (1, 2)],
        "categories": [{"id": 1, "name": "date"}, {"id": 2, "name": "fig"}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "bbox": [0, 0, 10, 10],
                "area": 100,
                "iscrowd": 0,
                "segmentation": [[0, 0, 10, 0, 10, 10, 0, 10]],
            },
            {
                "id": 2,
                "image_id": 2,
                "category_id": 2,
                "bbox": [20, 10, 10, 10],
                "area": 100,
                "iscrowd": 0,
                "segmentation": [[20, 10, 30, 10, 30, 20, 20, 20]],
            },
        ],
    }
    preds = [
        {
            "image_id": 1,
            "category_id": 1,
            "bbox": [0, 0, 10, 10],
            "score": 0.9,
            "segmentation": _rect(0, 0, 10, 10),
        },
        {
            "image_id": 2,
            "category_id": 2,
            "bbox": [20, 10, 10, 10],
            "score": 0.8,
            "segmentation": _rect(20, 10, 10, 10),
        },
        # "fig" fires on image 1 (which has no fig)
        {
            "image_id": 1,
            "category_id": 2,
            "bbox": [5, 5, 4, 4],
            "score": 0.6,
            "segmentation": _rect(5, 5, 4, 4),
        },
    ]
    return gt, preds


def test_eval_predictions_cli_writes_reports(tmp_path, capsys):
    gt, preds = _case()
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "preds.json").write_text(json.dumps(preds))
    out = tmp_path / "report"
    code = main(
        [
            "eval",
            "--predictions",
            str(tmp_path / "preds.json"),
            "--gt",
            str(tmp_path / "gt.json"),
            "--out",
            str(out),
        ]
    )
    assert code == 0
    report = json.loads((out / "eval.json").read_text())
    summary = report["model"]["summary"]
    # date: one hit, AP 1. fig: the hit (0.8) ranks above the false fire (0.6) -> AP 1 too.
    assert summary["bbox_AP"] == pytest.approx(1.0)
    assert summary["segm_AP"] == pytest.approx(1.0)
    # negatives: (2, date) and (1, fig); fig fires on image 1 -> 1 of 2
    assert summary["false_fire_rate"] == pytest.approx(0.5)
    # pairs: (1,date) TP, (2,fig) TP, (1,fig) FP, (2,date) TN -> MCC = 1/sqrt(3*2*1*1... )
    mcc = (2 * 1 - 1 * 0) / np.sqrt((2 + 1) * (2 + 0) * (1 + 1) * (1 + 0))
    assert summary["bbox_IL_MCC"] == pytest.approx(mcc, abs=1e-5)
    metrics = report["model"]["metrics"]
    assert metrics["specificity"]["per_category"]["fig"]["fired_images"] == 1
    assert metrics["queries"] == 4 and metrics["detections"] == 3
    md = (out / "eval.md").read_text()
    assert "| box AP | 100.0 |" in md and "| false fire rate | 50.0 |" in md
    assert "| fig | 1 | 1 | 1 |" in md  # specificity table: negatives, fired, false detections
    assert "box AP" in capsys.readouterr().out


def test_categories_never_asked_are_left_out(tmp_path):
    gt, preds = _case()
    gt["categories"].append({"id": 3, "name": "placeholder"})  # no annotation, no prediction
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "preds.json").write_text(json.dumps(preds))
    metrics, md = evaluate_results_file(tmp_path / "preds.json", tmp_path / "gt.json", tmp_path / "out")
    assert metrics.categories == 2 and metrics.queries == 4
    assert "placeholder" not in metrics.specificity.per_category
    assert "left out: placeholder" in md


def test_baseline_side_by_side():
    gt, preds = _case()
    tuned = evaluate_predictions(gt, preds)
    base = evaluate_predictions(gt, [p for p in preds if p["category_id"] == 1])
    md = markdown_report(tuned, "tuned", baseline=base, baseline_label="zero-shot")
    assert "| metric | zero-shot | tuned | change |" in md
    # fig AP: baseline finds nothing (0), tuned 100 -> box AP 50 -> 100
    assert "| box AP | 50.0 | 100.0 | +50.0 |" in md
    assert "| false fire rate | 0.0 | 50.0 | +50.0 |" in md


def test_masks_skipped_when_predictions_lack_them():
    gt, preds = _case()
    for p in preds:
        del p["segmentation"]
    m = evaluate_predictions(gt, preds, EvalConfig())
    assert set(m.coco) == {"bbox"} and "mask metrics skipped" in m.notes[0]


def test_cli_rejects_incomplete_arguments(tmp_path, capsys):
    assert main(["eval", "--predictions", str(tmp_path / "p.json")]) == 2
    assert "--predictions needs --gt" in capsys.readouterr().err
