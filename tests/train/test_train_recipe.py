"""The real pipeline (data + tiny SAM 3 + official criterion) through ``train``."""

import json
import os
import signal

import pytest
import torch
from coco_fixture import write_dataset

from sam3tune.config import load_config
from sam3tune.model.components import component_of
from sam3tune.train.checkpoint import load_checkpoint
from sam3tune.train.config import TrainConfig
from sam3tune.train.metrics_log import read_metrics
from sam3tune.train.recipe import load_run_config, recipe_role, train

FAST = [
    "model.name=tiny",
    "loop.num_workers=0",
    "loop.batch_size=2",
    "loop.epochs=2",
    "val.every_epochs=1",
    "val.eval.num_workers=0",
]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("data"), train=8, valid=3)


def _config(dataset, output, *extra):
    return load_config(TrainConfig, None, [f"data.root={dataset}", f"output_dir={output}", *FAST, *extra])


def _losses(run_dir):
    return [(r["step"], r["loss"]) for r in read_metrics(run_dir / "metrics.jsonl") if r["kind"] == "train"]


def test_run_directory_layout_and_exported_model(dataset, tmp_path):
    result = train(_config(dataset, tmp_path, "run_name=a"))
    run = tmp_path / "a"
    assert result.run_dir == run and result.status == "completed" and result.steps == 8
    resolved = load_run_config(run)
    assert resolved.data.resolution == 64  # follows the tiny model's input size
    records = read_metrics(run / "metrics.jsonl")
    train_records = [r for r in records if r["kind"] == "train"]
    assert len(train_records) == 8
    # the official total: 2 decoder layers x (o2o + o2m) terms, scaled by sqrt(queries), in the tens+
    assert 10 < train_records[0]["loss"] < 5_000
    components = {"loss_ce", "presence_loss", "loss_bbox", "loss_giou", "loss_mask", "loss_dice"}
    assert components <= set(train_records[0])
    val = [r for r in records if r["kind"] == "val"]
    assert [r["step"] for r in val] == [4, 8]
    assert {"loss", "bbox_AP", "bbox_AP50", "segm_AP", "bbox_cgF1"} <= set(val[0])  # through sam3tune.eval
    assert 0.0 <= val[-1]["bbox_AP50"] <= 1.0
    best_step = max(val, key=lambda r: r["bbox_AP"])["step"]  # the first best on ties
    assert json.loads((run / "checkpoints" / "best" / "meta.json").read_text())["step"] == best_step
    layout = ("config.yaml", "metrics.jsonl", "loss_curve.png", "tb", "checkpoints/last", "checkpoints/best")
    for name in layout:
        assert (run / name).exists(), name
    assert (run / "model" / "config.json").is_file()
    best_state = load_checkpoint(run / "checkpoints" / "best")[0]
    from safetensors.torch import load_file

    exported = load_file(str(run / "model" / "model.safetensors"))
    for name, tensor in best_state.items():
        key = name.removeprefix("sam3.")
        assert torch.equal(exported[key], tensor), name
    with pytest.raises(FileExistsError, match="--resume"):
        train(_config(dataset, tmp_path, "run_name=a"))


def test_roles_put_every_parameter_of_the_real_model_in_its_recipe_group():
    from sam3tune.model import build_training_model, load_model

    config = TrainConfig()
    model = build_training_model(load_model("tiny"), config.model)
    blocks = model.core.config.vision_config.backbone_config.num_hidden_layers
    roles = {name: recipe_role(name, blocks) for name, _ in model.named_parameters()}
    assert roles["sam3.vision_encoder.backbone.layers.1.mlp.fc1.weight"].vit_depth == 2
    assert roles["sam3.vision_encoder.backbone.embeddings.patch_embeddings.projection.weight"].vit_depth == 0
    assert roles["sam3.vision_encoder.backbone.layer_norm.weight"].vit_depth == 0
    assert roles["sam3.vision_encoder.backbone.embeddings.position_embeddings"].vit_depth is None
    assert roles["sam3.vision_encoder.neck.fpn_layers.0.proj1.weight"].vit_depth is None
    assert roles["sam3.text_projection.weight"].component == "text"
    for name, role in roles.items():
        expected = {"vision": "vision", "text": "text"}.get(component_of(name), "transformer")
        assert role.component == expected, name


def test_sigint_interrupted_run_resumes_to_the_same_losses(dataset, tmp_path):
    reference = train(_config(dataset, tmp_path, "run_name=reference", "loop.num_workers=1"))

    def interrupt(record):
        if record["step"] == 3:
            os.kill(os.getpid(), signal.SIGINT)

    stopped = train(_config(dataset, tmp_path, "run_name=run", "loop.num_workers=1"), on_step_end=interrupt)
    assert (stopped.status, stopped.steps) == ("interrupted", 3)
    resumed = train(load_run_config(tmp_path / "run"), resume=tmp_path / "run")
    assert resumed.status == "completed" and resumed.steps == 8
    assert _losses(tmp_path / "run") == _losses(reference.run_dir)
    val = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "val"]
    ref_val = [r for r in read_metrics(reference.run_dir / "metrics.jsonl") if r["kind"] == "val"]
    assert [r["loss"] for r in val] == [r["loss"] for r in ref_val]
    assert json.loads((tmp_path / "run" / "checkpoints" / "last" / "meta.json").read_text())["step"] == 8
