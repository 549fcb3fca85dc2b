import numpy as np
import pytest

from sam3tune.eval.coco_metrics import coco_metrics
from sam3tune.eval.rle import encode_masks


def _box_mask(x, y, w, h, size=(40, 40)):
    mask = np.zeros((1, *size), dtype=bool)
    mask[0, y : y + h, x : x + w] = True
    return encode_masks(mask)[0]


def _gt():
    boxes = {1: (0, 0, 10, 10, 1), 2: (20, 20, 10, 10, 1), 3: (5, 25, 8, 8, 2)}
    return {
        "images": [{"id": 7, "height": 40, "width": 40, "file_name": "a.jpg"}],
        "categories": [{"id": 1, "name": "date"}, {"id": 2, "name": "fig"}],
        "annotations": [
            {
                "id": i,
                "image_id": 7,
                "category_id": c,
                "bbox": [x, y, w, h],
                "area": w * h,
                "iscrowd": 0,
                "segmentation": _box_mask(x, y, w, h),
            }
            for i, (x, y, w, h, c) in boxes.items()
        ],
    }


def _det(x, y, w, h, score, category=1):
    return {
        "image_id": 7,
        "category_id": category,
        "bbox": [x, y, w, h],
        "score": score,
        "segmentation": _box_mask(x, y, w, h),
    }


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_ap_matches_hand_computation(iou_type):
    # "date": d1 hits g1 exactly (0.9); d2 is a false positive (0.8); d3 is an 8x8 box inside
    # g2's 10x10, IoU 0.64 (0.7). Ranked: TP, FP, TP(at IoU <= 0.64) -> precision 1, 1/2, 2/3 at
    # recall 1/2, 1/2, 1. Interpolated precision over the 101 recall points:
    #   IoU 0.50, 0.55, 0.60: 1 for r <= 0.5 (51 points), 2/3 above (50 points)
    #   IoU 0.65 .. 0.95:     1 for r <= 0.5, 0 above (d3 no longer matches)
    # "fig": its only object is found exactly -> AP 1.
    results = [
        _det(0, 0, 10, 10, 0.9),
        _det(30, 0, 5, 5, 0.8),
        _det(20, 20, 8, 8, 0.7),
        _det(5, 25, 8, 8, 0.95, category=2),
    ]
    metrics = coco_metrics(_gt(), results, iou_type)
    high = (51 + 50 * 2 / 3) / 101
    low = 51 / 101
    date_ap = (3 * high + 7 * low) / 10
    assert metrics.per_category["date"]["AP50"] == pytest.approx(high, abs=1e-9)
    assert metrics.per_category["date"]["AP75"] == pytest.approx(low, abs=1e-9)
    assert metrics.per_category["date"]["AP"] == pytest.approx(date_ap, abs=1e-9)
    assert metrics.per_category["fig"]["AP"] == pytest.approx(1.0)
    assert pytest.approx((date_ap + 1.0) / 2, abs=1e-9) == metrics.AP
    assert pytest.approx((high + 1.0) / 2, abs=1e-9) == metrics.AP50
    assert pytest.approx((low + 1.0) / 2, abs=1e-9) == metrics.AP75
    assert metrics.APl is None  # no object is large (> 96^2 px)


def test_category_without_ground_truth_is_undefined_and_no_results_give_zero():
    gt = _gt()
    gt["categories"].append({"id": 3, "name": "hazelnut"})
    metrics = coco_metrics(gt, [], "bbox")
    assert metrics.AP == 0.0
    assert metrics.per_category["hazelnut"]["AP"] is None
    assert metrics.per_category["date"]["AP"] == 0.0


def test_bbox_only_objects_are_ignored_for_masks():
    gt = _gt()
    del gt["annotations"][0]["segmentation"]  # g1 has a box only
    # d1 covers g1 and is the top detection: for segm it is neither a TP nor an FP.
    results = [_det(0, 0, 10, 10, 0.9), _det(20, 20, 10, 10, 0.8), _det(5, 25, 8, 8, 0.9, category=2)]
    segm = coco_metrics(gt, results, "segm")
    bbox = coco_metrics(gt, results, "bbox")
    assert segm.neutralised == 1
    assert segm.per_category["date"]["AP"] == pytest.approx(1.0)
    assert bbox.per_category["date"]["AP"] == pytest.approx(1.0)


def test_results_for_unknown_images_are_rejected():
    bad = _det(0, 0, 10, 10, 0.9)
    bad["image_id"] = 99
    with pytest.raises(ValueError, match="image_id 99"):
        coco_metrics(_gt(), [bad], "bbox")
