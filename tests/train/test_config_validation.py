"""Issue 14, class 3: a config value that would train wrongly (or reach torch as a traceback) is refused
with its dotted key named, through every way a config is built."""

import dataclasses
import re

import pytest

from sam3tune.config import ConfigError, InvalidValue, load_config
from sam3tune.data.queries import load_prompt_map
from sam3tune.devices import resolve_device
from sam3tune.eval.config import EvalConfig, PostprocessConfig
from sam3tune.train.config import LoopConfig, OptimConfig, TrainConfig

LORA = "model.finetune.lora"
# (override, the key the message must name, words of the requirement)
REFUSED = [
    ("optim.grad_clip_norm=0", "optim.grad_clip_norm=0.0", "> 0"),
    ("optim.grad_clip_norm=-1", "optim.grad_clip_norm=-1.0", "> 0"),
    ("optim.lr_transformer=-1e-4", "optim.lr_transformer=-0.0001", ">= 0"),
    ("optim.lr_vision=.nan", "optim.lr_vision=nan", "finite"),
    ("optim.lr_text=.inf", "optim.lr_text=inf", "finite"),
    ("optim.lora_lr=-1", "optim.lora_lr", ">= 0"),
    ("optim.weight_decay=-0.1", "optim.weight_decay", ">= 0"),
    ("optim.vision_layer_decay=0", "optim.vision_layer_decay", "(0, 1]"),
    ("optim.vision_layer_decay=1.5", "optim.vision_layer_decay", "(0, 1]"),
    ("optim.eps=0", "optim.eps", "> 0"),
    ("optim.betas=[0.9]", "optim.betas=[0.9]", "two numbers in [0, 1)"),
    ("optim.betas=[0.9, 0.999, 0.5]", "optim.betas", "two numbers"),
    ("optim.betas=[0.9, 1.0]", "optim.betas", "[0, 1)"),
    ("schedule.warmup_steps=-1", "schedule.warmup_steps", ">= 0"),
    ("schedule.cooldown_steps=-5", "schedule.cooldown_steps", ">= 0"),
    ("schedule.timescale=0", "schedule.timescale", ">= 1"),
    ("loop.max_steps=0", "loop.max_steps=0", ">= 1"),
    ("loop.max_steps=-3", "loop.max_steps", ">= 1"),
    ("loop.epochs=0", "loop.epochs", ">= 1"),
    ("loop.batch_size=0", "loop.batch_size", ">= 1"),
    ("loop.grad_accum_steps=0", "loop.grad_accum_steps", ">= 1"),
    ("loop.num_workers=-1", "loop.num_workers", ">= 0"),
    ("loop.max_consecutive_nonfinite=0", "loop.max_consecutive_nonfinite", ">= 1"),
    ("loop.checkpoint_every_steps=-1", "loop.checkpoint_every_steps", ">= 0"),
    ("loop.seed=-1", "loop.seed", "[0, 4294967295]"),
    ("loop.device=gpu", "loop.device='gpu'", "auto, cpu, cuda"),
    ("loop.device=cuda:x", "loop.device", "cuda:N"),
    ("val.every_epochs=-1", "val.every_epochs", ">= 0"),
    ("val.map=false", "val.best_metric='bbox_AP'", "val.map is false"),
    ("val.eval.batch_size=0", "val.eval.batch_size", ">= 1"),
    ("val.eval.cgf1_score_threshold=1.5", "val.eval.cgf1_score_threshold", "[0, 1]"),
    ("val.eval.iou_types=[keypoints]", "val.eval.iou_types", "bbox and/or segm"),
    ("val.eval.postprocess.max_detections=0", "val.eval.postprocess.max_detections", ">= 1"),
    ("val.eval.postprocess.nms_iou_threshold=0", "val.eval.postprocess.nms_iou_threshold", "(0, 1]"),
    ("loss.weights.loss_giou=-2", "loss.weights.loss_giou", ">= 0"),
    ("loss.o2m_weight=-1", "loss.o2m_weight", ">= 0"),
    ("loss.pos_weight=0", "loss.pos_weight", "> 0"),
    ("loss.alpha=2", "loss.alpha", "[0, 1]"),
    ("loss.focal_gamma=-1", "loss.focal_gamma", ">= 0"),
    ("loss.normalization=batch", "loss.normalization", "is not one of"),
    ("loss.num_sample_points=0", "loss.num_sample_points", ">= 1"),
    ("loss.matcher.cost_bbox=-5", "loss.matcher.cost_bbox", ">= 0"),
    ("loss.o2m_matcher.topk=0", "loss.o2m_matcher.topk", ">= 1"),
    ("loss.o2m_matcher.threshold=1.2", "loss.o2m_matcher.threshold", "[0, 1]"),
    ("model.name=' '", "model.name", "architecture, a folder or a hub id"),
    ("model.detr_dropout=1", "model.detr_dropout", "[0, 1)"),
    ("model.finetune.lora.rank=0", "model.finetune.lora.rank", ">= 1"),
    ("model.finetune.lora.alpha=0", "model.finetune.lora.alpha", "> 0"),
    ("model.finetune.lora.dropout=-0.1", "model.finetune.lora.dropout", "[0, 1)"),
    ("model.finetune.lora.rank_per_component={vision: 0}", f"{LORA}.rank_per_component.vision", "positive"),
    ("model.finetune.lora.rank_per_component={vison: 4}", f"{LORA}.rank_per_component.vison", "not one of"),
    ("model.finetune.lora.target_modules={vision: '(['}", f"{LORA}.target_modules.vision", "regular"),
    ("data.resolution=4", "data.resolution", ">= 8"),
    ("data.mask_resolution=0", "data.mask_resolution", ">= 1"),
    ("data.max_objects_per_query=0", "data.max_objects_per_query", ">= 1"),
    ("data.negatives=-1", "data.negatives", "k >= 0"),
    ("data.train=''", "data.train", "must name a split"),
    ("run_name=../elsewhere", "run_name='../elsewhere'", "inside output_dir"),
    ("run_name=a/b", "run_name", "one folder name"),
    ("run_name=..", "run_name", "inside output_dir"),
    ("run_name=''", "run_name", "one folder name"),
]  # fmt: skip


@pytest.mark.parametrize(("override", "key", "requirement"), REFUSED, ids=[r[0] for r in REFUSED])
def test_a_meaningless_value_is_refused_with_its_key(override, key, requirement):
    with pytest.raises(ConfigError) as caught:  # InvalidValue, or the type check for a Literal
        load_config(TrainConfig, None, [override])
    message = str(caught.value)
    assert message.startswith(key), message
    assert requirement in message, message


def test_the_config_file_is_checked_like_overrides(tmp_path):
    (tmp_path / "c.yaml").write_text("optim:\n  grad_clip_norm: -0.1\n")
    with pytest.raises(ConfigError, match=r"^optim\.grad_clip_norm=-0\.1: must be > 0"):
        load_config(TrainConfig, tmp_path / "c.yaml")


def test_configs_built_in_code_are_checked_too():
    # every construction runs validate(): dataclasses.replace, the predict CLI's PostprocessConfig, ...
    with pytest.raises(InvalidValue, match=r"^max_steps=0"):
        dataclasses.replace(LoopConfig(), max_steps=0)
    with pytest.raises(InvalidValue, match=r"^score_threshold=1\.5"):
        PostprocessConfig(score_threshold=1.5)
    with pytest.raises(InvalidValue, match=r"^betas=\[0\.9\]"):
        OptimConfig(betas=[0.9])
    with pytest.raises(ValueError):  # InvalidValue is a ValueError: callers that caught those still do
        EvalConfig(batch_size=0)


def test_the_recipe_defaults_and_the_edges_that_make_sense_pass():
    config = load_config(
        TrainConfig,
        None,
        [
            "optim.grad_clip_norm=null",  # null turns clipping off
            "optim.lr_text=0",  # a zero learning rate leaves a component as it is
            "schedule.warmup_steps=0",
            "schedule.cooldown_steps=0",
            "loop.max_steps=1",
            "loop.device=cuda:1",  # well formed; whether the machine has it is checked when training starts
            "val.map=false",
            "val.best_metric=loss",
            "run_name=my-run.v2",
        ],
    )
    assert config.optim.grad_clip_norm is None and config.loop.max_steps == 1
    assert TrainConfig().optim.grad_clip_norm == 0.1


def test_a_device_this_machine_lacks_is_named_before_torch_fails():
    with pytest.raises(ValueError, match=r"loop\.device='cuda:7': this machine has no such device"):
        resolve_device("cuda:7", 0)
    with pytest.raises(ValueError, match=r"loop\.device='tpu': not a torch device"):
        resolve_device("tpu", 0)
    assert resolve_device("cpu", 0).type == "cpu"


def test_prompt_maps_read_yes_no_on_as_words(tmp_path):
    path = tmp_path / "prompts.yaml"
    path.write_text("on: light switch\nno: no entry sign\nyes: nodding head\n3: off\n")
    assert load_prompt_map(path) == {
        "on": "light switch",
        "no": "no entry sign",
        "yes": "nodding head",
        "3": "off",
    }


def test_predict_and_eval_name_their_device_key(tmp_path, capsys):
    from sam3tune.cli import main

    image = tmp_path / "a.png"
    image.write_bytes(b"")
    out = ["--out", str(tmp_path / "out")]
    assert main(["predict", "--model", "tiny", "--prompt", "x", "device=cuda:9", str(image), *out]) == 2
    assert "device='cuda:9': this machine has no such device" in capsys.readouterr().err
    assert main(["predict", "--model", "tiny", "--prompt", "x", "device=gpu", str(image), *out]) == 2
    assert "device='gpu': must be auto, cpu, cuda" in capsys.readouterr().err
    assert main(["eval", "--model", "tiny", "--data", str(tmp_path), "device=cuda:9", *out]) == 2
    assert "device='cuda:9': this machine has no such device" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # refused before anything was written


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("patch_size: 7", "image_size=64: must be a multiple of patch_size"),
        ("vit_heads: 3", "vit_hidden_size=32: must be a multiple of vit_heads"),
        ("detr_hidden_size: 12", "detr_hidden_size=12: must be a multiple of 8"),
        ("vit_layers: 0", "vit_layers=0: must be >= 1"),
        ("vit_global_attn_indexes: [5]", "vit_global_attn_indexes=(5,): must be layer indexes"),
    ],
)
def test_an_architecture_file_that_cannot_build_is_refused_with_its_key(tmp_path, change, message):
    import yaml

    from sam3tune.model import load_model
    from sam3tune.model.architectures import NAMED_ARCHITECTURES

    spec = dataclasses.asdict(NAMED_ARCHITECTURES["tiny"])
    key, value = change.split(": ")
    spec[key] = yaml.safe_load(value)
    path = tmp_path / "arch.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(InvalidValue, match=re.escape(message)):
        load_model(str(path))


def test_doctor_names_a_missing_device(tmp_path, capsys):
    from sam3tune.cli import main

    assert main(["doctor", "--data", str(tmp_path), "--model", "tiny", "loop.device=cuda:9"]) == 2
    assert "loop.device='cuda:9': this machine has no such device" in capsys.readouterr().err
