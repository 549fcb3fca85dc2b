"""The doctor does not call mistaken labels ready without a word (issue 14, class 2)."""

import json

from sam3tune.doctor.diagnosis import diagnose
from sam3tune.doctor.text_report import format_report
from tests.doctor.conftest import rewrite_annotations, run_config


def test_masks_off_their_boxes_raise_suspect_labels(shapes, tmp_path):
    moved = []

    def shift_first_mask(annotation, width, height):
        if not moved and annotation.get("segmentation"):
            x, _, w, _ = annotation["bbox"]
            dx = width / 2 if x + w / 2 < width / 2 else -width / 2  # to the other half of the image
            annotation["segmentation"] = [
                [v + dx if i % 2 == 0 else v for i, v in enumerate(p)] for p in annotation["segmentation"]
            ]
            moved.append(annotation["id"])

    report = diagnose(run_config(rewrite_annotations(shapes, tmp_path, shift_first_mask)))
    flag = next(f for f in report.flags if f.code == "suspect_labels")
    assert flag.severity == "warning" and "1 x mask_box_mismatch" in flag.message
    assert any(f"annotation {moved[0]} " in d for d in flag.details)
    assert "suspect_labels" in format_report(report)


def test_categories_sharing_a_prompt_make_the_data_unusable(shapes, tmp_path):
    root = rewrite_annotations(shapes, tmp_path, lambda annotation, width, height: None)
    path = root / "train" / "_annotations.coco.json"
    coco = json.loads(path.read_text())
    names = [c for c in coco["categories"] if c["id"] != 0]
    names[1]["name"] = names[0]["name"].upper()
    path.write_text(json.dumps(coco))
    report = diagnose(run_config(root))
    flag = next(f for f in report.flags if f.code == "data_unusable")
    assert "[prompt_collision]" in flag.message and str(path) in flag.message
    assert report.exit_status == 1
