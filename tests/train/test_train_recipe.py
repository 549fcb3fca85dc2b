"""The real pipeline (data + tiny SAM 3 + official criterion) through ``train``."""

import json
import os
import signal

import pytest
import torch
from coco_fixture import write_dataset

from sam3tune.config import ConfigError, load_config
from sam3tune.model.components import component_of
from sam3tune.run_dir import RunDir
from sam3tune.train.checkpoint import load_checkpoint
from sam3tune.train.config import TrainConfig
from sam3tune.train.metrics_log import read_metrics
from sam3tune.train.param_groups import role_of
from sam3tune.train.recipe import train

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
    resolved = RunDir(run).config()
    assert resolved.data.resolution == 64  # follows the tiny model's input size
    records = read_metrics(run / "metrics.jsonl")
    train_records = [r for r in records if r["kind"] == "train"]
    assert len(train_records) == 8
    # the official total: 2 decoder layers x (o2o + o2m) terms, scaled by sqrt(queries), in the tens+
    assert 10 < train_records[0]["loss"] < 5_000
    components = {"loss_ce", "presence_loss", "loss_bbox", "loss_giou", "loss_mask", "loss_dice"}
    assert components <= set(train_records[0])
    val = [r for r in records if r["kind"] == "val"]
    assert [r["step"] for r in val] == [0, 4, 8]  # step 0: the starting model (zero-shot)
    assert {"loss", "bbox_AP", "bbox_AP50", "segm_AP", "bbox_cgF1"} <= set(val[0])  # through sam3tune.eval
    assert 0.0 <= val[-1]["bbox_AP50"] <= 1.0
    best_step = max(val[1:], key=lambda r: r["bbox_AP"])["step"]  # trained weights only; the first on ties
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
    with pytest.raises(ConfigError, match="--resume"):
        train(_config(dataset, tmp_path, "run_name=a"))


def test_roles_put_every_parameter_of_the_real_model_in_its_recipe_group():
    from sam3tune.model import build_training_model, load_model

    config = TrainConfig()
    model = build_training_model(load_model("tiny"), config.model)
    roles = {name: role_of(name) for name, _ in model.named_parameters()}
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
    # one epoch of 4 steps with a data-loader worker, stopped after step 2 (validation runs at the end;
    # validation before a stop is covered by the loop tests and the SIGKILL test)
    options = ["loop.num_workers=1", "loop.epochs=1"]
    reference = train(_config(dataset, tmp_path, "run_name=reference", *options))

    def interrupt(record):
        if record["step"] == 2:
            os.kill(os.getpid(), signal.SIGINT)

    stopped = train(_config(dataset, tmp_path, "run_name=run", *options), on_step_end=interrupt)
    assert (stopped.status, stopped.steps) == ("interrupted", 2)
    resumed = train(RunDir(tmp_path / "run").config(), resume=tmp_path / "run")
    assert resumed.status == "completed" and resumed.steps == 4
    assert _losses(tmp_path / "run") == _losses(reference.run_dir)
    val = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "val"]
    ref_val = [r for r in read_metrics(reference.run_dir / "metrics.jsonl") if r["kind"] == "val"]
    assert [r["loss"] for r in val] == [r["loss"] for r in ref_val]
    assert json.loads((tmp_path / "run" / "checkpoints" / "last" / "meta.json").read_text())["step"] == 4


def test_recipe_learning_rates_on_the_real_model():
    from sam3tune.model import build_training_model, load_model
    from sam3tune.train.param_groups import build_param_groups, no_weight_decay_names

    config = TrainConfig()
    model = build_training_model(load_model("tiny"), config.model)
    groups = build_param_groups(
        model.named_parameters(), role_of, no_weight_decay_names(model), config.optim, 2
    )
    group_of = {id(p): g for g in groups for p in g["params"]}
    params = dict(model.named_parameters())

    def lr_wd(name):
        group = group_of[id(params["sam3." + name])]
        return pytest.approx(group["lr"], rel=1e-12), group["weight_decay"]

    vit = "vision_encoder.backbone."
    assert lr_wd(vit + "layers.1.mlp.fc1.weight") == (2.5e-5 * 0.9, 0.1)  # last of 2 blocks
    assert lr_wd(vit + "layers.0.attention.q_proj.bias") == (2.5e-5 * 0.9**2, 0.0)
    assert lr_wd(vit + "embeddings.patch_embeddings.projection.weight") == (2.5e-5 * 0.9**3, 0.1)
    assert lr_wd(vit + "layer_norm.weight") == (2.5e-5 * 0.9**3, 0.0)
    assert lr_wd(vit + "embeddings.position_embeddings") == (2.5e-5, 0.1)
    assert lr_wd("vision_encoder.neck.fpn_layers.0.proj1.weight") == (2.5e-5, 0.1)
    assert lr_wd("text_encoder.text_model.encoder.layers.0.mlp.fc1.weight") == (5e-6, 0.1)
    assert lr_wd("text_projection.weight") == (5e-6, 0.1)
    assert lr_wd("detr_decoder.layers.0.self_attn.q_proj.weight") == (8e-5, 0.1)
    assert lr_wd("detr_decoder.layers.0.mlp_layer_norm.weight") == (8e-5, 0.0)
    assert lr_wd("dot_product_scoring.text_proj.weight") == (8e-5, 0.1)
    assert lr_wd("mask_decoder.pixel_decoder.norms.0.weight") == (8e-5, 0.0)  # GroupNorm
    assert "sam3.geometry_encoder.final_proj.weight" not in {
        n for n, p in params.items() if id(p) in group_of
    }


def test_lora_run_trains_adapters_at_the_lora_rate_and_exports_them(dataset, tmp_path):
    from sam3tune.model import build_training_model, load_model
    from sam3tune.train.param_groups import build_param_groups, no_weight_decay_names

    config = _config(dataset, tmp_path, "run_name=lora", "model.finetune.mode=lora", "loop.epochs=1")
    model = build_training_model(load_model("tiny"), config.model)
    groups = build_param_groups(
        model.named_parameters(), role_of, no_weight_decay_names(model), config.optim, 2
    )
    by_name = {g["name"]: g for g in groups}
    assert (by_name["lora"]["lr"], by_name["lora"]["weight_decay"]) == (2e-4, 0.0)
    assert all(
        ".lora_" in n for n, p in model.named_parameters() if any(p is q for q in by_name["lora"]["params"])
    )
    assert by_name["transformer"]["lr"] == 8e-5  # the fully trained heads keep the recipe rate
    assert not any(name.startswith("vision") for name in by_name)  # the frozen backbone has no group

    result = train(config)
    assert result.status == "completed" and result.steps == 4
    state = load_checkpoint(tmp_path / "lora" / "checkpoints" / "last")[0]
    adapters = [name for name in state if ".lora_A." in name or ".lora_B." in name]
    assert adapters and not any("vision_encoder.backbone.layers.0.mlp.fc1.base_layer" in n for n in state)
    assert (tmp_path / "lora" / "adapters" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "lora" / "model" / "config.json").is_file()


def test_exemplar_training_trains_the_geometry_encoder(dataset, tmp_path):
    from safetensors.torch import load_file

    from sam3tune.model import load_model

    config = _config(dataset, tmp_path, "run_name=ex", "loop.epochs=1", "data.exemplars.probability=1.0")
    result = train(config)
    assert result.status == "completed" and result.steps == 4
    assert all(r["loss"] == r["loss"] for r in read_metrics(tmp_path / "ex" / "metrics.jsonl"))  # finite
    start = load_model("tiny", seed=config.loop.seed).model.state_dict()
    exported = load_file(str(tmp_path / "ex" / "model" / "model.safetensors"))
    geometry = [k for k in exported if k.startswith("geometry_encoder.")]
    linear = [k for k in geometry if k.endswith(("proj.weight", "fc1.weight", "fc2.weight"))]
    assert len(linear) > 8 and [k for k in linear if torch.equal(exported[k], start[k])] == []
    # without exemplars the geometry encoder never moves
    plain = train(_config(dataset, tmp_path, "run_name=plain", "loop.epochs=1"))
    assert plain.status == "completed"
    untouched = load_file(str(tmp_path / "plain" / "model" / "model.safetensors"))
    assert all(torch.equal(untouched[k], start[k]) for k in geometry)
