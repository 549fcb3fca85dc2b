"""A semantic (label-map) dataset through the real pipeline: train (semantic criterion, mIoU validation),
eval with a baseline, predict label maps."""

import json

import numpy as np
import pytest
from PIL import Image

from sam3tune.cli import main
from sam3tune.config import load_config
from sam3tune.data.semantic import generate_semantic
from sam3tune.data.synth import SynthConfig
from sam3tune.eval.api import evaluate_model
from sam3tune.predict import Predictor
from sam3tune.train.config import TrainConfig
from sam3tune.train.metrics_log import read_metrics
from sam3tune.train.recipe import train


@pytest.fixture(scope="module")
def semantic_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("semantic")
    generate_semantic(SynthConfig(image_size=(64, 64), splits=(("train", 4), ("valid", 2)), seed=0), root)
    return root


def test_semantic_run_trains_the_semantic_head_and_validates_miou(semantic_data, tmp_path, capsys):
    overrides = [
        f"data.root={semantic_data}",
        f"output_dir={tmp_path}",
        "run_name=run",
        "model.name=tiny",
        "loop.num_workers=0",
        "loop.batch_size=2",
        "loop.epochs=2",
        "val.every_epochs=1",
    ]
    result = train(load_config(TrainConfig, None, overrides))
    assert result.status == "completed" and result.steps == 4
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    first = next(r for r in records if r["kind"] == "train")
    assert {"loss_semantic_seg", "loss_semantic_dice", "presence_loss", "miou_semantic_seg"} <= set(first)
    assert not {"loss_bbox", "loss_ce", "loss_mask"} & set(first)  # instance losses are off
    # the total is sqrt(8 queries) x (20 focal + 30 dice + 20 x presence over 2 decoder layers)
    presence = first["presence_loss"] + first["presence_loss_aux_0"]
    expected = 8**0.5 * (20 * first["loss_semantic_seg"] + 30 * first["loss_semantic_dice"] + 20 * presence)
    assert first["loss"] == pytest.approx(expected, rel=1e-4)
    val = [r for r in records if r["kind"] == "val"]
    assert [r["step"] for r in val] == [0, 2, 4]  # the starting model, then after each epoch
    assert all(0.0 <= r["mIoU"] <= 1.0 for r in val)
    assert (
        json.loads((tmp_path / "run" / "checkpoints" / "best" / "meta.json").read_text())["best_metric"]
        == "mIoU"
    )

    model = str(tmp_path / "run" / "model")
    metrics, base, markdown = evaluate_model(
        model, load_config(TrainConfig, None, overrides).data, tmp_path / "eval", baseline="tiny"
    )
    assert base is not None and 0.0 <= metrics.miou <= 1.0
    assert "| **mIoU** |" in markdown and "red circle" in markdown
    report = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert report["metrics"]["mIoU"] == pytest.approx(metrics.miou)

    predictor = Predictor.load(model)
    image = semantic_data / "valid" / "images" / "000000.jpg"
    labels = predictor.predict_semantic(image, ["red circle", "blue triangle"])
    assert labels.shape == (64, 64) and set(np.unique(labels)) <= {0, 1, 2}
    forwards, forward = [], predictor.forward
    predictor.forward = lambda batch: forwards.append(batch.num_images) or forward(batch)
    predictor.predict_files(
        [image, image], ["red circle"], tmp_path / "pred", overlays=False, semantic=True, progress=False
    )
    assert forwards == [1, 1]  # one forward pass per image gives its detections and its label map
    predictor.forward = forward
    written = np.asarray(Image.open(tmp_path / "pred" / "semantic" / "000000.png"))
    assert written.shape == (64, 64) and set(np.unique(written)) <= {0, 1}
    assert np.array_equal(written, predictor.predict_semantic(image, ["red circle"]))
    # the same through the command line
    args = ["predict", str(image), "--model", model, "--prompt", "red circle", "--out", str(tmp_path / "cli")]
    assert main([*args, "semantic=true", "overlays=false"]) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "cli" / "semantic" / "000000.png")), written)
    args = ["eval", "--model", model, "--data", str(semantic_data), "--out", str(tmp_path / "cli_eval")]
    assert main([*args, "data.val=valid"]) == 0
    assert "| **mIoU** |" in capsys.readouterr().out


def test_a_k_shot_sample_of_label_maps_is_refused(semantic_data, tmp_path, capsys):
    status = main(
        ["train", "--data", str(semantic_data), "model.name=tiny", f"output_dir={tmp_path}", "data.shots=2"]
    )
    assert status == 2
    assert "K-shot samples are drawn from instance labels" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # no half-made run left behind
