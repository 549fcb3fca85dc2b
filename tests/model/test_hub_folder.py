"""A folder shaped like the ``facebook/sam3`` hub repository, offline: load, doctor, two training steps,
and refusal (naming the component) when a component's weights are absent or renamed.

Same files as the hub repository: ``config.json`` (a ``sam3_video`` config whose detector is SAM 3),
``model.safetensors`` (``detector_model.*`` next to ``tracker_model.*`` / ``tracker_neck.*`` keys),
transformers' CLIP tokenizer files made from CLIP's real BPE file, ``processor_config.json``. The weights
are small (the tiny architecture with CLIP's 49408-token vocabulary and 32-token context).
"""

import dataclasses
import json
import math
import re

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import CLIPTokenizer, Sam3Model, Sam3VideoConfig

from sam3tune.cli import main
from sam3tune.model import NAMED_ARCHITECTURES, ClipTokenizer, WeightsNotLoadedError, load_model
from sam3tune.model.architectures import sam3_config
from sam3tune.train.metrics_log import read_metrics
from tests.model.meta_sam3 import clip_bpe_file
from tests.train.coco_fixture import write_dataset


def _write_hub_folder(folder, tmp):
    spec = dataclasses.replace(NAMED_ARCHITECTURES["tiny"], text_vocab_size=49408, text_max_length=32)
    config = sam3_config(spec)
    torch.manual_seed(0)
    model = Sam3Model(config)
    folder.mkdir()
    Sam3VideoConfig(detector_config=config.to_dict()).save_pretrained(folder)
    weights = {f"detector_model.{k}": v.contiguous() for k, v in model.state_dict().items()}
    weights["tracker_model.memory_encoder.weight"] = torch.zeros(4, 4)
    weights["tracker_neck.conv.weight"] = torch.zeros(2, 2)
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    ClipTokenizer.from_bpe_file(clip_bpe_file()).save(tmp)
    ClipTokenizer.from_folder(tmp).save(folder)  # vocab.json + merges.txt
    # tokenizer.json + tokenizer_config.json as transformers writes them
    CLIPTokenizer.from_pretrained(tmp, model_max_length=32).save_pretrained(folder)
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}
    (folder / "special_tokens_map.json").write_text(json.dumps(special))
    processor = {
        "processor_class": "Sam3Processor",
        "image_processor": {
            "image_processor_type": "Sam3ImageProcessor",
            "size": {"height": 64, "width": 64},
        },
    }
    (folder / "processor_config.json").write_text(json.dumps(processor))
    return model


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    model = _write_hub_folder(root / "sam3", root / "bpe")
    return root / "sam3", model


def test_load_model_reads_the_hub_layout(hub):
    folder, original = hub
    assert {"config.json", "model.safetensors", "processor_config.json", "vocab.json", "merges.txt"} <= {
        p.name for p in folder.iterdir()
    }
    bundle = load_model(folder)
    assert bundle.report.weights_loaded and bundle.report.missing == []
    for key, value in original.state_dict().items():
        assert torch.equal(bundle.model.state_dict()[key], value), key
    assert isinstance(bundle.tokenize, ClipTokenizer) and bundle.image_size == 64
    ids, mask = bundle.tokenize(["fish &amp; chips", "red apple"])
    reference = ClipTokenizer.from_bpe_file(clip_bpe_file())  # checked against Meta's in test_clip_tokenizer
    assert torch.equal(ids, reference(["fish & chips", "red apple"])[0])  # Meta's cleaning: "&amp;" is "&"
    assert ids[0, 0] == 49406 and ids[0, 4] == 49407 and mask.sum(1).tolist() == [5, 4]


def test_doctor_and_two_training_steps_from_the_folder(hub, tmp_path, capsys):
    folder, _ = hub
    data = write_dataset(tmp_path / "data", train=4, valid=0)
    status = main(
        ["doctor", "--data", str(data), "--model", str(folder), "loop.device=cpu", "loop.batch_size=1"]
    )
    out = capsys.readouterr().out
    assert status == 0, out
    assert "TRAINABLE PARAMETERS" in out and str(folder) in out
    status = main(
        [
            "train", "--data", str(data), f"output_dir={tmp_path}", "run_name=hub", f"model.name={folder}",
            "loop.num_workers=0", "loop.batch_size=1", "loop.max_steps=2", "loop.device=cpu",
        ]
    )  # fmt: skip
    assert status == 0, capsys.readouterr().err
    records = read_metrics(tmp_path / "hub" / "metrics.jsonl")
    steps = [r for r in records if "loss" in r and not r.get("skipped")]
    assert len(steps) == 2 and all(math.isfinite(r["loss"]) for r in steps)


@pytest.mark.parametrize(
    ("change", "component"),
    [
        (lambda k: None if k.startswith("detector_model.text_encoder.") else k, "text encoder (CLIP)"),
        (
            lambda k: k.replace("vision_encoder.backbone.", "vision_encoder.vit."),
            "vision encoder (ViT + FPN)",
        ),
        (lambda k: k.replace("detr_decoder.layers.", "detr_decoder.blocks."), "DETR decoder"),
    ],
    ids=["text-absent", "vit-renamed", "detr-decoder-renamed"],
)
def test_a_component_without_its_weights_is_refused_by_name(hub, tmp_path, change, component):
    folder, _ = hub
    broken = tmp_path / "broken"
    broken.mkdir()
    for path in folder.iterdir():
        if path.name != "model.safetensors":
            (broken / path.name).write_bytes(path.read_bytes())
    weights = {change(k): v for k, v in load_file(folder / "model.safetensors").items()}
    save_file({k: v for k, v in weights.items() if k is not None}, broken / "model.safetensors")
    with pytest.raises(
        WeightsNotLoadedError, match=rf"lacks weights of the {re.escape(component)}: \d+ of \d+ weights"
    ):
        load_model(broken)
