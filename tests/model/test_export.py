import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import Sam3Model

from sam3tune.model import (
    FinetuneConfig,
    LoraConfig,
    ModelConfig,
    build_training_model,
    load_adapters,
    load_model,
    save_adapters,
)
from sam3tune.model.hub import ModelSpecError
from sam3tune.model.training_model import Sam3ForTraining
from tests.model.conftest import total_of

LORA = ModelConfig(
    name="tiny",
    finetune=FinetuneConfig(
        mode="lora", lora=LoraConfig(components=["vision", "text", "detr_decoder", "mask_decoder"])
    ),
)


def _trained_lora_model(batch):
    """A LoRA model after a few SGD steps, so adapters and heads differ from their initial values."""
    model = build_training_model(load_model("tiny"), LORA).train()
    optimiser = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01)
    for _ in range(3):
        optimiser.zero_grad()
        total_of(model(*batch)).backward()
        optimiser.step()
    return model.eval()


def _cxcywh_to_xyxy(boxes):
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)


def test_adapters_round_trip_in_peft_format(tmp_path, batch):
    model = _trained_lora_model(batch)
    save_adapters(model, tmp_path / "adapters")
    files = {p.name for p in (tmp_path / "adapters").iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= files
    assert not any(name.endswith(".bin") for name in files)
    config = json.loads((tmp_path / "adapters" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 16
    assert set(config["modules_to_save"]) == {"box_head", "presence_head", "dot_product_scoring"}
    assert any("lora_B" in k for k in load_file(tmp_path / "adapters" / "adapter_model.safetensors"))

    base = load_model("tiny")  # the same seed: the same base weights
    restored = Sam3ForTraining(load_adapters(base.model, tmp_path / "adapters"), base.tokenize).eval()
    with torch.no_grad():
        expected, got = model(*batch), restored(*batch)
    for key in ("pred_logits", "pred_boxes", "presence_logits", "pred_masks"):
        assert torch.equal(expected[key], got[key]), key


def test_merged_lora_model_loads_in_plain_transformers(tmp_path, batch):
    model = _trained_lora_model(batch)
    model.save_pretrained(tmp_path / "merged")
    assert model.core.vision_encoder.backbone.layers[0].attention.q_proj.lora_A  # training model untouched
    plain = Sam3Model.from_pretrained(tmp_path / "merged").eval()
    assert not any("lora" in n or "modules_to_save" in n for n, _ in plain.named_parameters())
    pixel_values, image_index, input_ids, attention_mask = batch
    with torch.no_grad():
        ours = model(*batch)
        hf = plain(pixel_values=pixel_values[image_index], input_ids=input_ids, attention_mask=attention_mask)
    torch.testing.assert_close(hf.pred_logits, ours["pred_logits"], rtol=0, atol=1e-5)
    torch.testing.assert_close(hf.pred_boxes, _cxcywh_to_xyxy(ours["pred_boxes"]), rtol=0, atol=1e-6)
    torch.testing.assert_close(hf.presence_logits, ours["presence_logits"].clamp(-10, 10), rtol=0, atol=1e-5)
    torch.testing.assert_close(hf.pred_masks, ours["pred_masks"], rtol=0, atol=1e-5)
    # the heads really were trained (the merged model is not the initial one)
    initial = load_model("tiny").model.detr_decoder.box_head.layer1.weight
    assert not torch.equal(plain.detr_decoder.box_head.layer1.weight, initial)
    # and load_model finds the tokenizer next to it
    assert (
        load_model(tmp_path / "merged").tokenize(["nut"])[0].tolist() == model.tokenizer(["nut"])[0].tolist()
    )


def test_full_model_save_pretrained_predicts_identically(tmp_path, batch):
    model = build_training_model(load_model("tiny"), ModelConfig(name="tiny")).eval()
    model.save_pretrained(tmp_path / "full")
    plain = Sam3Model.from_pretrained(tmp_path / "full").eval()
    pixel_values, image_index, input_ids, attention_mask = batch
    with torch.no_grad():
        ours = model(*batch)
        hf = plain(pixel_values=pixel_values[image_index], input_ids=input_ids, attention_mask=attention_mask)
    assert torch.equal(hf.pred_logits, ours["pred_logits"]) and torch.equal(hf.pred_masks, ours["pred_masks"])
    assert plain.config.detr_decoder_config.hidden_dropout == 0.1  # the training dropout travels along


def test_save_adapters_needs_lora(tmp_path):
    model = build_training_model(load_model("tiny"), ModelConfig(name="tiny"))
    with pytest.raises(ValueError, match=r"finetune\.mode=lora"):
        save_adapters(model, tmp_path / "a")
    with pytest.raises(ModelSpecError, match=r"adapter_model\.safetensors"):
        load_adapters(load_model("tiny").model, tmp_path)


def test_saving_replaces_an_existing_directory_atomically(tmp_path):
    model = build_training_model(load_model("tiny"), ModelConfig(name="tiny"))
    target = tmp_path / "out"
    target.mkdir()
    (target / "stale.txt").write_text("old")
    model.save_pretrained(target)
    assert not (target / "stale.txt").exists() and (target / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging leftovers
