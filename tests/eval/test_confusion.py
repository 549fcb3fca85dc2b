"""Prompt confusion on hand-made cases: which other category's objects a prompt's detections land on."""

from sam3tune.eval.confusion import confusion_table
from sam3tune.eval.evaluate import evaluate_predictions
from sam3tune.eval.report import markdown_report

GT = {
    "images": [{"id": i, "height": 100, "width": 100} for i in (1, 2, 3)],
    "categories": [{"id": 1, "name": "moon"}, {"id": 2, "name": "heart"}, {"id": 3, "name": "star"}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 2, "bbox": [10, 10, 20, 20]},  # heart
        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [60, 60, 20, 20]},  # moon
        {"id": 3, "image_id": 2, "category_id": 2, "bbox": [0, 0, 30, 30]},  # heart
        {"id": 4, "image_id": 2, "category_id": 3, "bbox": [50, 50, 30, 30]},  # star
        {"id": 5, "image_id": 3, "category_id": 3, "bbox": [10, 10, 40, 40]},  # star
    ],
}


def det(image_id, category_id, box, score=0.9):
    return {"image_id": image_id, "category_id": category_id, "bbox": box, "score": score}


RESULTS = [
    det(1, 1, [10, 10, 20, 20]),  # moon on the heart: moon -> heart
    det(1, 1, [61, 61, 20, 20]),  # moon on its own moon: not a confusion
    det(2, 1, [1, 1, 30, 30]),  # moon on the heart: moon -> heart
    det(2, 1, [50, 50, 30, 30], score=0.3),  # below the threshold: ignored
    det(2, 1, [50, 50, 10, 10]),  # moon overlapping the star by IoU 1/9: on nothing
    det(3, 2, [12, 12, 40, 40]),  # heart on the star (IoU 0.82): heart -> star
    det(3, 3, [10, 10, 40, 40]),  # star on its star
    det(3, 1, [70, 70, 20, 20]),  # moon on empty background
]


def test_counts_detections_landing_on_other_categories():
    table = confusion_table(GT, RESULTS, score_threshold=0.5, iou_threshold=0.5)
    assert table.counts == {"moon": {"heart": 2}, "heart": {"star": 1}}
    assert table.fired == {"moon": 5, "heart": 1, "star": 1}
    assert table.pairs() == [("moon", "heart", 2), ("heart", "star", 1)]
    assert table.line("moon", "heart") == "moon -> heart: 2"


def test_own_object_wins_over_another_category_at_the_same_place():
    # an object labelled both "heart" and "moon" (overlapping categories): a moon detection on it is right
    gt = {
        **GT,
        "annotations": [
            *GT["annotations"],
            {"id": 6, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20]},
        ],
    }
    table = confusion_table(gt, RESULTS[:2])
    assert table.counts == {}


def test_each_detection_goes_to_the_object_it_overlaps_most():
    gt = {
        "images": [{"id": 1, "height": 100, "width": 100}],
        "categories": [{"id": 1, "name": "moon"}, {"id": 2, "name": "heart"}, {"id": 3, "name": "star"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 2, "bbox": [0, 0, 20, 20]},
            {"id": 2, "image_id": 1, "category_id": 3, "bbox": [2, 2, 20, 20]},
        ],
    }
    table = confusion_table(gt, [det(1, 1, [2, 2, 20, 20])])  # IoU 0.68 with the heart, 1 with the star
    assert table.counts == {"moon": {"star": 1}}


def test_extra_objects_count_as_their_own_categories():
    # the starting model's "circle" detections (reference) name an object the labels do not
    extra = [(3, "circle", [70, 70, 20, 20]), (1, "circle", [40, 40, 5, 5])]
    table = confusion_table(GT, RESULTS, extra_objects=extra)
    assert table.counts == {"moon": {"heart": 2, "circle": 1}, "heart": {"star": 1}}
    assert table.extra_categories == ["circle"]
    assert table.line("moon", "circle") == "moon -> circle (reference): 1"


def test_evaluation_reports_the_confusion_table():
    metrics = evaluate_predictions(GT, RESULTS)
    assert metrics.confusion.counts == {"moon": {"heart": 2}, "heart": {"star": 1}}
    assert metrics.to_dict()["confusion"]["counts"]["moon"] == {"heart": 2}
    md = markdown_report(metrics, "tuned", metrics, "zero-shot")
    assert "## Prompt confusion" in md
    assert "| moon -> heart | 2 | 2 |" in md and "| heart -> star | 1 | 1 |" in md
