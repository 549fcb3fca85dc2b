"""`sam3tune eval` on YouTube-VIS ground truth: a results file, and video models next to a baseline."""

import json

import pytest

from sam3tune.cli import main
from sam3tune.data.synth_video import generate_videos
from sam3tune.demo.tasks import video_task

pytest.importorskip("trackeval")


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    out = tmp_path_factory.mktemp("videos")
    config = video_task(videos=2)
    generate_videos(
        config.__class__(**{**config.__dict__, "frames": (12, 14), "mp4": False}), out, progress=False
    )
    return out


def _ground_truth_as_results(truth):
    return [
        {
            "video_id": a["video_id"],
            "category_id": a["category_id"],
            "score": 1.0,
            "segmentations": a["segmentations"],
        }
        for a in truth["annotations"]
    ]


def test_ground_truth_as_predictions_scores_one(videos, tmp_path, capsys):
    truth = json.loads((videos / "annotations.json").read_text())
    (tmp_path / "tracks.json").write_text(json.dumps(_ground_truth_as_results(truth)))
    out = tmp_path / "eval"
    assert (
        main(
            [
                "eval",
                "--predictions",
                str(tmp_path / "tracks.json"),
                "--gt",
                str(videos / "annotations.json"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    report = json.loads((out / "eval.json").read_text())
    summary = report["model"]["summary"]
    assert summary["video_AP"] == pytest.approx(1.0) and summary["HOTA"] == pytest.approx(1.0)
    assert summary["DetA"] == pytest.approx(1.0) and summary["AssA"] == pytest.approx(1.0)
    assert "| HOTA | 100.0 |" in (out / "eval.md").read_text()
    assert "video mask AP" in capsys.readouterr().out


def test_bad_results_are_named(videos, tmp_path, capsys):
    truth = json.loads((videos / "annotations.json").read_text())
    results = _ground_truth_as_results(truth)
    results[1]["segmentations"] = results[1]["segmentations"][:-1]
    (tmp_path / "tracks.json").write_text(json.dumps(results))
    args = ["eval", "--predictions", str(tmp_path / "tracks.json"), "--gt", str(videos / "annotations.json")]
    assert main([*args, "--out", str(tmp_path / "e")]) == 2
    assert "track 1: segmentations must list" in capsys.readouterr().err


def test_models_next_to_a_baseline(videos, video_model_dir, tmp_path, capsys):
    out = tmp_path / "eval"
    args = [
        "eval",
        "--model",
        str(video_model_dir),
        "--data",
        str(videos / "annotations.json"),
        f"baseline={video_model_dir}",
    ]
    code = main(
        [
            *args,
            "--out",
            str(out),
            "video.detections=true",
            "video.prompt_token=hf",
            "video.tracker.hotstart_delay=0",
        ]
    )
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "eval.json").read_text())
    for run in ("model", "baseline"):
        summary = report[run]["summary"]
        assert {"video_AP", "HOTA", "DetA", "AssA", "frame_bbox_AP", "frame_segm_AP"} <= set(summary)
    # the same model twice: the same numbers
    assert report["model"]["summary"] == report["baseline"]["summary"]
    results = json.loads((out / "predictions.json").read_text())
    truth = json.loads((videos / "annotations.json").read_text())
    lengths = {v["id"]: v["length"] for v in truth["videos"]}
    assert all(len(r["segmentations"]) == lengths[r["video_id"]] for r in results)
    frames = json.loads((out / "predictions_frames.json").read_text())
    assert {d["image_id"] for d in frames} <= set(range(1, sum(lengths.values()) + 1))
    assert report["context"]["prompts"] == {"star": "star", "heart": "heart", "moon": "moon"}
    assert "| per-frame box AP |" in (out / "eval.md").read_text()
