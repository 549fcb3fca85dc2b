import pytest

from sam3tune.eval.specificity import specificity_metrics


def test_false_fires_by_hand():
    gt = {
        "images": [{"id": i, "height": 10, "width": 10} for i in (1, 2, 3)],
        "categories": [{"id": 1, "name": "date"}, {"id": 2, "name": "fig"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 2, 2]},
            {"id": 2, "image_id": 2, "category_id": 2, "bbox": [0, 0, 2, 2], "iscrowd": 1},
        ],
    }

    def det(image, category, score):
        return {"image_id": image, "category_id": category, "bbox": [0, 0, 1, 1], "score": score}

    results = [
        det(1, 1, 0.9),  # positive pair: not a false fire
        det(2, 1, 0.7),  # date absent from image 2: fires (2 detections)
        det(2, 1, 0.6),
        det(3, 1, 0.4),  # below threshold
        det(1, 2, 0.55),  # fig absent from image 1: fires
        det(2, 2, 0.9),  # image 2 has a (crowd) fig: not negative
    ]
    m = specificity_metrics(gt, results, score_threshold=0.5)
    assert m.per_category["date"] == {
        "negative_images": 2,
        "fired_images": 1,
        "false_fire_rate": 0.5,
        "false_detections": 2,
    }
    assert m.per_category["fig"]["negative_images"] == 2  # images 1 and 3
    assert m.per_category["fig"]["false_fire_rate"] == pytest.approx(0.5)
    assert (m.negative_pairs, m.fired_pairs, m.false_detections) == (4, 2, 3)
    assert m.false_fire_rate == pytest.approx(0.5)
    assert specificity_metrics(gt, results, score_threshold=0.95).false_fire_rate == 0.0
