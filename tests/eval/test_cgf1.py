import numpy as np
import pytest
from meta_cgf1_reference import meta_cgf1

from sam3tune.eval.cgf1 import cgf1_metrics
from sam3tune.eval.rle import encode_masks


def _rect(x, y, w, h, size):
    mask = np.zeros((1, *size), dtype=bool)
    mask[0, y : y + h, x : x + w] = True
    return encode_masks(mask)[0]


def _synthetic(seed: int):
    """Random images x 3 prompts: empty pairs, hits, near misses, duplicates and false fires."""
    rng = np.random.default_rng(seed)
    size = (48, 64)
    gt = {"images": [], "categories": [{"id": c, "name": f"thing{c}"} for c in (1, 2, 3)], "annotations": []}
    results = []
    for image_id in range(1, 13):
        gt["images"].append(
            {"id": image_id, "height": size[0], "width": size[1], "file_name": f"{image_id}.jpg"}
        )
        for category in (1, 2, 3):
            n_objects = int(rng.choice([0, 0, 1, 2, 3]))
            for _ in range(n_objects):
                w, h = (int(v) for v in rng.integers(4, 16, size=2))
                x, y = int(rng.integers(0, size[1] - w)), int(rng.integers(0, size[0] - h))
                crowd = int(rng.random() < 0.08)
                gt["annotations"].append(
                    {
                        "id": len(gt["annotations"]) + 1,
                        "image_id": image_id,
                        "category_id": category,
                        "bbox": [x, y, w, h],
                        "area": w * h,
                        "iscrowd": crowd,
                        "segmentation": _rect(x, y, w, h, size),
                    }
                )
                for _ in range(int(rng.choice([0, 1, 1, 2]))):  # hit(s) with jitter
                    dx, dy, dw, dh = (int(v) for v in rng.integers(-2, 3, size=4))
                    bx, by = max(0, x + dx), max(0, y + dy)
                    bw, bh = max(1, min(w + dw, size[1] - bx)), max(1, min(h + dh, size[0] - by))
                    results.append(
                        _result(image_id, category, bx, by, bw, bh, 0.3 + 0.7 * rng.random(), size)
                    )
            for _ in range(int(rng.choice([0, 0, 1, 2]))):  # false fires anywhere
                w, h = (int(v) for v in rng.integers(3, 12, size=2))
                x, y = int(rng.integers(0, size[1] - w)), int(rng.integers(0, size[0] - h))
                results.append(_result(image_id, category, x, y, w, h, rng.random(), size))
    return gt, results


def _result(image_id, category, x, y, w, h, score, size):
    return {
        "image_id": image_id,
        "category_id": category,
        "bbox": [float(x), float(y), float(w), float(h)],
        "score": float(score),
        "segmentation": _rect(x, y, w, h, size),
    }


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cgf1_matches_meta_reference(tmp_path, iou_type, seed):
    gt, results = _synthetic(seed)
    ours = cgf1_metrics(gt, results, iou_type, score_threshold=0.5)
    reference = meta_cgf1(gt, results, iou_type, tmp_path)
    assert set(reference) <= set(ours.values)
    for name, value in reference.items():
        if value == -1:  # undefined in Meta's summary
            assert ours.values[name] is None, name
        else:
            assert ours.values[name] == pytest.approx(value, abs=1e-9), name
    assert ours.pairs["TP"] + ours.pairs["FP"] + ours.pairs["TN"] + ours.pairs["FN"] == 12 * 3
    assert ours.pairs["TN"] > 0 and ours.pairs["FP"] > 0  # the synthetic set exercises negatives
    assert ours.cgF1 == pytest.approx(reference["cgF1"], abs=1e-9)


def test_cgf1_by_hand():
    size = (20, 20)
    gt = {
        "images": [{"id": i, "height": 20, "width": 20} for i in (1, 2)],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "iscrowd": 0},
            {"id": 2, "image_id": 2, "category_id": 1, "bbox": [0, 0, 10, 10], "iscrowd": 0},
        ],
    }
    results = [
        _result(1, 1, 0, 0, 10, 10, 0.9, size),  # pair (1, a): TP, IoU 1
        _result(1, 1, 12, 12, 5, 5, 0.8, size),  # pair (1, a): extra detection -> positive FP
        _result(1, 2, 0, 0, 4, 4, 0.7, size),  # pair (1, b): negative that fires -> IL FP
        _result(2, 2, 0, 0, 4, 4, 0.3, size),  # below threshold: pair (2, b) is a TN
    ]
    m = cgf1_metrics(gt, results, "bbox")
    assert m.pairs == {"TP": 1, "FP": 1, "TN": 1, "FN": 1}  # (2, a) has an object but no detection
    # instance level: TP 1, positive FP 1, FN 1 at every threshold -> P = R = F1 = 1/2
    assert m.positive_micro_F1 == pytest.approx(0.5, abs=1e-3)
    assert m.values["IL_MCC"] == pytest.approx(0.0, abs=1e-6)  # (1*1 - 1*1) / 4
    assert m.values["precision"] == pytest.approx(1 / 3, abs=1e-3)  # global counts the false fire
    assert m.cgF1 == pytest.approx(0.0, abs=1e-6)
