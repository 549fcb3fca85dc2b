import json
import math

import numpy as np
import pytest
import torch

from sam3tune.eval.coco_results import (
    detections_from_results,
    group_by_query,
    load_coco_results,
    save_coco_results,
)
from sam3tune.eval.config import PostprocessConfig
from sam3tune.eval.nms import nms
from sam3tune.eval.postprocess import postprocess


def _logit(p):
    return math.log(p / (1 - p))


def _outputs():
    # 2 queries x 3 proposals, 8x8 mask logits on the square canvas.
    logits = torch.tensor(
        [[_logit(0.9), _logit(0.5), _logit(0.2)], [_logit(0.6), _logit(0.95), _logit(0.99)]]
    )
    presence = torch.tensor([[_logit(0.8)], [_logit(0.1)]])
    boxes = torch.tensor(
        [
            [[0.5, 0.5, 0.5, 0.5], [0.25, 0.25, 0.5, 0.5], [0.9, 0.9, 0.4, 0.4]],
            [[0.5, 0.5, 1.0, 1.0], [0.5, 0.5, 0.2, 0.2], [0.5, 0.5, 0.2, 0.2]],
        ]
    )
    masks = torch.full((2, 3, 8, 8), -10.0)
    masks[0, 0, 2:6, 2:6] = 10.0  # centre square (half the side) of the canvas
    masks[0, 1, :4, :4] = 10.0  # top-left quarter
    return {"pred_logits": logits, "presence_logits": presence, "pred_boxes": boxes, "pred_masks": masks}


def test_scores_boxes_and_masks_in_original_pixels():
    sizes = [(40, 80), (30, 30)]  # (height, width): a non-square original image
    dets = postprocess(_outputs(), sizes, PostprocessConfig(score_threshold=0.3))
    # query 0: scores 0.9*0.8=0.72, 0.5*0.8=0.40, 0.2*0.8=0.16 -> two kept, decreasing
    np.testing.assert_allclose(dets[0].scores, [0.72, 0.40], rtol=1e-6)
    # box 0: cxcywh (0.5,0.5,0.5,0.5) -> xyxy (0.25,0.25,0.75,0.75) * (w=80, h=40)
    np.testing.assert_allclose(dets[0].boxes[0], [20, 10, 60, 30], rtol=1e-6)
    np.testing.assert_allclose(dets[0].boxes[1], [0, 0, 40, 20], rtol=1e-6)
    masks = dets[0].mask_array()
    assert masks.shape == (2, 40, 80)
    # the 8x8 centre square maps to rows 10..30, cols 20..60 (bilinear edges within a pixel)
    assert masks[0, 12:28, 22:58].all() and not masks[0, :8].any() and not masks[0, :, :18].any()
    assert abs(int(masks[0].sum()) - 20 * 40) <= 2 * (20 + 40)
    assert masks[1, :18, :38].all() and not masks[1, 22:].any()
    # query 1: presence 0.1 caps every score below 0.1 -> nothing kept
    assert len(dets[1]) == 0 and dets[1].masks == []


def test_max_detections_nms_and_clipping():
    out = _outputs()
    out["presence_logits"] = torch.tensor([[20.0], [20.0]])  # presence ~1
    dets = postprocess(out, [(10, 10), (10, 10)], PostprocessConfig(max_detections=2, with_masks=False))
    assert len(dets[0]) == 2 and dets[0].masks is None
    np.testing.assert_allclose(dets[0].scores, [0.9, 0.5], rtol=1e-5)
    # query 1: proposals 1 and 2 are the same box; with NMS only the higher score (0.99) stays
    # box (0.9, 0.9, 0.4, 0.4) of query 0 would reach 1.1: clipped to the image
    all0 = postprocess(out, [(10, 10), (10, 10)], PostprocessConfig(with_masks=False))[0]
    np.testing.assert_allclose(all0.boxes[2], [7, 7, 10, 10], rtol=1e-5)
    q1 = postprocess(out, [(10, 10), (10, 10)], PostprocessConfig(nms_iou_threshold=0.5, with_masks=False))[1]
    np.testing.assert_allclose(q1.scores, [0.99, 0.6], rtol=1e-5)


def test_nms_greedy_by_hand():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30], [0, 0, 10, 9]], dtype=torch.float)
    scores = torch.tensor([0.5, 0.9, 0.3, 0.8])
    # 1 (0.9) kept; IoU(3, 1) = 81/109 = 0.74, IoU(0, 1) = 90/110 = 0.82, IoU(0, 3) = 90/100 = 0.9
    assert nms(boxes, scores, 0.5).tolist() == [1, 2]
    assert nms(boxes, scores, 0.8).tolist() == [1, 3, 2]
    assert nms(boxes, scores, 0.85).tolist() == [1, 3, 2]  # 0 goes with 3
    assert nms(boxes, scores, 0.95).tolist() == [1, 3, 0, 2]


def test_bad_shapes_are_named():
    out = _outputs()
    out["presence_logits"] = out["presence_logits"][:, 0]
    with pytest.raises(ValueError, match="presence_logits"):
        postprocess(out, [(10, 10), (10, 10)])


def test_predictions_round_trip_through_coco_json(tmp_path):
    dets = postprocess(_outputs(), [(40, 80), (30, 30)], PostprocessConfig(score_threshold=0.0))
    results = dets[0].to_coco_results(image_id=3, category_id=5) + dets[1].to_coco_results(
        image_id=4, category_id=5
    )
    path = tmp_path / "preds.json"
    save_coco_results(results, path)
    loaded = load_coco_results(path)
    assert json.loads(path.read_text()) == loaded and len(loaded) == 6
    groups = group_by_query(loaded)
    assert set(groups) == {(3, 5), (4, 5)}
    for key, det, size in (((3, 5), dets[0], (40, 80)), ((4, 5), dets[1], (30, 30))):
        back = detections_from_results(groups[key], size)
        np.testing.assert_allclose(back.scores, det.scores, rtol=1e-6)
        np.testing.assert_allclose(back.boxes, det.boxes, atol=1e-4)
        assert (back.mask_array() == det.mask_array()).all()


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]}, "missing 'score'"),
        ({"image_id": 1, "category_id": 1, "bbox": [0, 0, 1], "score": 0.5}, "bbox"),
        ({"image_id": "1", "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}, "image_id"),
    ],
)
def test_bad_results_name_file_and_entry(tmp_path, entry, message):
    path = tmp_path / "p.json"
    path.write_text(
        json.dumps([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.1}, entry])
    )
    with pytest.raises(ValueError, match=rf"p\.json, entry 1: .*{message}"):
        load_coco_results(path)
