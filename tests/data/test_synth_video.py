"""Synthetic videos: motion, occlusion, entries and exits, and ground truth that says so exactly."""

import json

import numpy as np
from PIL import Image

from sam3tune.data.synth_video import generate_videos
from sam3tune.demo.tasks import video_task
from sam3tune.eval.rle import decode_masks


def test_ground_truth_follows_the_drawn_objects(tmp_path):
    config = video_task(videos=3)
    truth = generate_videos(config, tmp_path, progress=False)
    assert truth == json.loads((tmp_path / "annotations.json").read_text())
    assert [c["name"] for c in truth["categories"]] == ["star", "heart", "moon"]
    assert len(truth["videos"]) == 3
    occluded = entering = 0
    for video in truth["videos"]:
        assert 30 <= video["length"] <= 60 and len(video["file_names"]) == video["length"]
        assert (tmp_path / "JPEGImages" / video["file_names"][-1]).is_file()
        tracks = [a for a in truth["annotations"] if a["video_id"] == video["id"]]
        assert tracks, "every video shows at least one object of a category"
        for t in range(video["length"]):
            masks = [
                decode_masks([a["segmentations"][t]], 64, 64)[0] for a in tracks if a["segmentations"][t]
            ]
            union = np.zeros((64, 64), int)
            for mask in masks:
                union += mask
            assert union.max() <= 1, "visible parts of different objects never overlap"
        for track in tracks:
            present = [s is not None for s in track["segmentations"]]
            entering += present[0] is False and any(present)
            areas = [a for a in track["areas"] if a is not None]
            occluded += min(areas) < 0.7 * max(areas)
            for seg, box, area in zip(track["segmentations"], track["bboxes"], track["areas"], strict=True):
                if seg is None:
                    assert box is None and area is None
                    continue
                mask = decode_masks([seg], 64, 64)[0]
                assert mask.sum() == area
                rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
                assert box == [cols[0], rows[0], cols[-1] + 1 - cols[0], rows[-1] + 1 - rows[0]]
    assert occluded >= 1 and entering >= 1  # some object is partly hidden or leaves; some enters later
    # the frame view: the same objects as COCO images
    coco = json.loads((tmp_path / "frames.coco.json").read_text())
    assert len(coco["images"]) == sum(v["length"] for v in truth["videos"])
    assert len(coco["annotations"]) == sum(
        s is not None for a in truth["annotations"] for s in a["segmentations"]
    )
    first = coco["images"][0]
    assert first["file_name"] == "JPEGImages/video000/00000.jpg"
    with Image.open(tmp_path / first["file_name"]) as image:
        assert image.size == (64, 64)


def test_same_config_same_videos(tmp_path):
    config = video_task(videos=1)
    a = generate_videos(config, tmp_path / "a", progress=False)
    b = generate_videos(config, tmp_path / "b", progress=False)
    assert a == b
    frame = "JPEGImages/video000/00010.jpg"
    assert np.array_equal(
        np.asarray(Image.open(tmp_path / "a" / frame)), np.asarray(Image.open(tmp_path / "b" / frame))
    )
