"""`sam3tune export --format video`: a tuned detector inside a transformers Sam3VideoModel folder."""

import json
import shutil

import pytest
import torch
import yaml
from safetensors import safe_open
from transformers import Sam3Model, Sam3VideoModel

from sam3tune.cli import main
from sam3tune.demo.base import base_model_dir
from sam3tune.model.architectures import NAMED_ARCHITECTURES, ArchitectureSpec
from sam3tune.ship.video_export import export_video_folder
from sam3tune.video.model import VideoModelError, save_random_video_model


def test_source_is_shaped_like_facebook_sam3(video_tracker_source):
    config = json.loads((video_tracker_source / "config.json").read_text())
    assert config["model_type"] == "sam3_video"
    with safe_open(str(video_tracker_source / "model.safetensors"), framework="pt") as handle:
        keys = handle.keys()
        prefixes = {key.split(".")[0] for key in keys}
    assert prefixes == {"detector_model", "tracker_model", "tracker_neck"}


def test_export_loads_in_plain_transformers_without_missing_or_unexpected_keys(
    video_model_dir, video_tracker_source
):
    model, info = Sam3VideoModel.from_pretrained(str(video_model_dir), output_loading_info=True)
    assert info["missing_keys"] == set() or not info["missing_keys"]
    assert not info["unexpected_keys"] and not info["mismatched_keys"] and not info["error_msgs"]
    # the detector is the tuned model's, weight for weight
    tuned = Sam3Model.from_pretrained(str(base_model_dir()), dtype=torch.float32).state_dict()
    detector = model.detector_model.state_dict()
    assert detector.keys() == tuned.keys()
    assert all(torch.equal(detector[k], tuned[k]) for k in tuned)
    # the tracker and its neck are the source's, unchanged
    source = Sam3VideoModel.from_pretrained(str(video_tracker_source)).state_dict()
    exported = model.state_dict()
    tracker_keys = [k for k in source if k.startswith(("tracker_model.", "tracker_neck."))]
    assert len(tracker_keys) > 100
    assert all(torch.equal(exported[k], source[k]) for k in tracker_keys)
    # ... and differ from the source's detector (which was left out)
    assert not torch.equal(
        exported["detector_model.text_projection.weight"], source["detector_model.text_projection.weight"]
    )


def test_export_files(video_model_dir, video_tracker_source):
    names = {p.name for p in video_model_dir.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "sam3tune_tokenizer.json",
        "processor_config.json",
        "preprocessor_config.json",
        "sam3tune_video.json",
    } <= names
    config = json.loads((video_model_dir / "config.json").read_text())
    assert config["model_type"] == "sam3_video"
    assert config["detector_config"]["vision_config"]["backbone_config"]["image_size"] == 64
    source = json.loads((video_tracker_source / "config.json").read_text())
    assert config["tracker_config"] == source["tracker_config"]
    assert config["new_det_thresh"] == source["new_det_thresh"] == 0.7
    processor = json.loads((video_model_dir / "processor_config.json").read_text())
    assert processor["processor_class"] == "Sam3VideoProcessor" and processor["target_size"] == 64
    for part in ("image_processor", "video_processor"):
        settings = processor[part]
        assert settings["size"] == {"height": 64, "width": 64}
        assert settings["image_mean"] == settings["image_std"] == [0.5, 0.5, 0.5]
        assert settings["rescale_factor"] == pytest.approx(1 / 255)
    assert processor["image_processor"]["mask_size"] == {"height": 32, "width": 32}  # 4 x the 8 x 8 grid
    manifest = json.loads((video_model_dir / "sam3tune_video.json").read_text())
    assert manifest["tracker"] == str(video_tracker_source)
    assert manifest["detector"] == str(base_model_dir())


def _fake_run(root, start_model):
    run = root / "run"
    shutil.copytree(base_model_dir(), run / "model")
    (run / "config.yaml").write_text(yaml.safe_dump({"model": {"name": str(start_model)}}))
    return run


def test_run_directory_takes_its_starting_model_as_tracker(tmp_path, video_tracker_source):
    run = _fake_run(tmp_path, video_tracker_source)
    done = export_video_folder(run, tmp_path / "out")
    assert done.tracker == str(video_tracker_source)
    assert done.detector == str(run / "model")
    _, info = Sam3VideoModel.from_pretrained(str(tmp_path / "out"), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]


def test_run_started_from_a_detector_alone_is_refused_with_what_to_do(tmp_path):
    run = _fake_run(tmp_path, base_model_dir())
    with pytest.raises(VideoModelError) as caught:
        export_video_folder(run, tmp_path / "out")
    message = str(caught.value)
    assert f"started from {base_model_dir()}" in message
    assert "holds no tracker" in message and "'sam3'" in message
    assert "video.tracker=facebook/sam3" in message
    assert not (tmp_path / "out").exists()


def test_small_architecture_as_tracker_is_refused(tmp_path):
    with pytest.raises(VideoModelError, match="holds no tracker"):
        export_video_folder(str(base_model_dir()), tmp_path / "out", tracker=str(base_model_dir()))


def test_video_config_without_tracker_weights_is_refused(tmp_path, video_tracker_source):
    folder = tmp_path / "detector-only"
    folder.mkdir()
    shutil.copy(video_tracker_source / "config.json", folder / "config.json")
    model = Sam3VideoModel.from_pretrained(str(video_tracker_source))
    from safetensors.torch import save_file

    save_file(
        {f"detector_model.{k}": v for k, v in model.detector_model.state_dict().items()},
        str(folder / "model.safetensors"),
    )
    with pytest.raises(VideoModelError, match=r"no tracker_model\.\* tensors"):
        export_video_folder(str(base_model_dir()), tmp_path / "out", tracker=str(folder))


def test_tracker_of_another_architecture_is_refused(tmp_path):
    wider = ArchitectureSpec(
        **{**NAMED_ARCHITECTURES["demo"].__dict__, "image_size": 128, "pretrain_image_size": 128}
    )
    source = save_random_video_model(wider, tmp_path / "other")
    with pytest.raises(
        VideoModelError, match=r"image size, patch size, FPN width \(128, 8, 64\).*\(64, 8, 64\)"
    ):
        export_video_folder(str(base_model_dir()), tmp_path / "out", tracker=str(source))


def test_cli(tmp_path, video_tracker_source, capsys):
    out = tmp_path / "video"
    code = main(
        [
            "export",
            "--format",
            "video",
            str(base_model_dir()),
            str(out),
            f"video.tracker={video_tracker_source}",
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert "SAM 3 video model written to" in capsys.readouterr().out
    assert (out / "model.safetensors").is_file()
    assert (
        main(["export", "--format", "onnx", "demo", str(tmp_path / "x"), "video.tracker=facebook/sam3"]) == 2
    )
    assert "video.tracker goes with --format video" in capsys.readouterr().err
    assert main(["export", "--format", "video", str(base_model_dir()), str(tmp_path / "y")]) == 2
    assert "holds no tracker" in capsys.readouterr().err
