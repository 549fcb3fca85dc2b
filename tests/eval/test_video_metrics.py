"""Video AP (YouTube-VIS protocol) and HOTA on hand-made tracks with known answers."""

import numpy as np
import pytest

from sam3tune.eval.rle import encode_masks
from sam3tune.eval.video_metrics import spatio_temporal_iou, video_metrics
from sam3tune.eval.ytvis import Track, VideoSet

pytest.importorskip("trackeval")
SIZE, LENGTH = 12, 10


def _square(x, y, side=4):
    mask = np.zeros((1, SIZE, SIZE), bool)
    mask[0, y : y + side, x : x + side] = True
    return encode_masks(mask)[0]


def _track(frames, x=0, y=0, category=1, score=1.0, video=1):
    """A square moving right one pixel a frame, on ``frames``."""
    return Track(
        video, category, [_square(x + t % 6, y) if t in frames else None for t in range(LENGTH)], score
    )


def _truth(*tracks, categories=None):
    videos = {1: {"width": SIZE, "height": SIZE, "length": LENGTH, "file_names": [], "name": "v"}}
    return VideoSet(videos, categories or {1: "square", 2: "other"}, list(tracks))


ALL = range(LENGTH)


def test_perfect_tracks_score_one():
    truth = _truth(_track(ALL), _track(ALL, y=6), _track(range(3, 9), y=3, category=2))
    metrics = video_metrics(truth, [_track(ALL), _track(ALL, y=6), _track(range(3, 9), y=3, category=2)])
    assert metrics.AP == metrics.AP50 == metrics.AP75 == 1.0
    for key in ("HOTA", "DetA", "AssA", "LocA"):
        assert metrics.hota[key] == pytest.approx(1.0)
    assert metrics.per_category["other"]["HOTA"] == pytest.approx(1.0)


def test_identity_switch_lowers_association_only():
    """One object, the prediction changes identity after 5 of 10 frames: every frame is still detected
    (DetA 1), each predicted id covers half the object's frames (AssA 0.5), HOTA sqrt(0.5)."""
    truth = _truth(_track(ALL))
    switched = [_track(range(5)), _track(range(5, 10))]
    metrics = video_metrics(truth, switched)
    assert metrics.hota["DetA"] == pytest.approx(1.0)
    assert metrics.hota["AssA"] == pytest.approx(0.5)
    assert metrics.hota["HOTA"] == pytest.approx(np.sqrt(0.5))
    # video AP: the better half-track overlaps the object by 5/10 frames: IoU 0.5 (AP50 only)
    assert pytest.approx(1.0) == metrics.AP50 and metrics.AP75 == 0.0


def test_missing_frames_lower_detection_and_association():
    """The prediction misses 3 of the object's 10 frames: DetA = 7 / 10 (3 FN), AssA = 7 / 10 (the one
    pair's ground truth has 3 frames unmatched), HOTA = 0.7; spatio-temporal IoU 7 / 10 passes the AP
    thresholds 0.50 ... 0.70 (5 of 10)."""
    truth = _truth(_track(ALL))
    metrics = video_metrics(truth, [_track(range(7))])
    assert metrics.hota["DetA"] == pytest.approx(0.7)
    assert metrics.hota["AssA"] == pytest.approx(0.7)
    assert metrics.hota["HOTA"] == pytest.approx(0.7)
    assert pytest.approx(0.5) == metrics.AP


def test_a_false_track_costs_precision():
    """An extra track on an empty corner for 5 frames: DetA = 10 / (10 + 5); AP: the right track scores
    higher, so precision stays 1 up to full recall (AP 1); ranked first, the false track halves it."""
    truth = _truth(_track(ALL))
    ghost = Track(1, 1, [_square(8, 8, 3) if t < 5 else None for t in ALL], 0.9)
    metrics = video_metrics(truth, [_track(ALL, score=0.95), ghost])
    assert metrics.hota["DetA"] == pytest.approx(10 / 15)
    assert pytest.approx(1.0) == metrics.AP
    metrics = video_metrics(truth, [_track(ALL, score=0.5), ghost])
    assert pytest.approx(0.5, abs=0.01) == metrics.AP


def test_spatio_temporal_iou_by_hand():
    a = _track(ALL)
    shifted = Track(1, 1, [_square(t % 6 + 2, 0) for t in ALL])  # 2 px right: 8 of 16 px shared a frame
    assert spatio_temporal_iou([a], [a])[0, 0] == pytest.approx(1.0)
    assert spatio_temporal_iou([shifted], [a])[0, 0] == pytest.approx(80 / (16 * 10 * 2 - 80))
    half = _track(range(5))
    assert spatio_temporal_iou([half], [a])[0, 0] == pytest.approx(0.5)
    crowd = _track(ALL)
    crowd.iscrowd = 1
    assert spatio_temporal_iou([half], [crowd])[0, 0] == pytest.approx(1.0)  # all of the prediction inside
