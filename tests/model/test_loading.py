import re

import pytest
import torch
from safetensors.torch import load_file, save_file

from sam3tune.model import (
    NAMED_ARCHITECTURES,
    HashingTokenizer,
    ModelConfig,
    WeightsNotLoadedError,
    build_training_model,
    load_model,
)
from sam3tune.model.hub import ModelSpecError


def test_named_architectures_build_deterministically():
    a, b = load_model("tiny"), load_model("tiny")
    assert a.image_size == NAMED_ARCHITECTURES["tiny"].image_size == 64
    assert isinstance(a.tokenize, HashingTokenizer)
    assert a.report.weights_loaded and a.report.missing == []
    for (name, p), q in zip(a.model.named_parameters(), b.model.parameters(), strict=True):
        assert torch.equal(p, q), name
    assert not torch.equal(
        a.model.detr_decoder.query_embed.weight,
        load_model("tiny", seed=1).model.detr_decoder.query_embed.weight,
    )


def test_named_architecture_uses_official_detr_init():
    model = load_model("small").model
    assert model.config.detr_decoder_config.num_queries == 30
    box_out = model.detr_decoder.box_head.layer3.requires_grad_(False)
    assert float(box_out.weight.abs().sum()) == float(box_out.bias.abs().sum()) == 0.0
    assert (
        0.8 < float(model.detr_decoder.query_embed.weight.detach().std()) < 1.2
    )  # N(0, 1), not HF's N(0, 0.02)


def _save(bundle, directory):
    model = build_training_model(bundle, ModelConfig(name="tiny"))
    model.save_pretrained(directory)
    return model


def test_saved_named_model_loads_back_with_its_tokenizer(tmp_path, batch):
    bundle = load_model("tiny")
    model = _save(bundle, tmp_path / "saved")
    loaded = load_model(tmp_path / "saved")
    assert loaded.report.weights_loaded and loaded.report.missing == loaded.report.unexpected == []
    assert isinstance(loaded.tokenize, HashingTokenizer)
    assert loaded.tokenize(["red apple"])[0].tolist() == bundle.tokenize(["red apple"])[0].tolist()
    assert loaded.image_size == 64
    again = build_training_model(loaded, ModelConfig(name="tiny")).eval()
    with torch.no_grad():
        expected, got = model.eval()(*batch), again(*batch)
    for key in ("pred_logits", "pred_boxes", "presence_logits", "pred_masks"):
        assert torch.equal(expected[key], got[key]), key


def test_half_precision_checkpoint_loads_as_float32(tmp_path):
    bundle = load_model("tiny")
    weights = {k: v.clone() for k, v in bundle.model.state_dict().items()}
    bundle.model.half().save_pretrained(tmp_path)
    bundle.tokenize.save(tmp_path)
    loaded = load_model(tmp_path)
    assert {p.dtype for p in loaded.model.parameters()} == {torch.float32}
    for name, value in loaded.model.state_dict().items():
        if value.is_floating_point():
            assert torch.equal(value, weights[name].half().float()), name  # fp16 rounding, nothing else
    assert load_model(tmp_path, dtype=torch.bfloat16).model.dtype == torch.bfloat16


def test_checkpoint_with_wrong_key_prefix_is_refused(tmp_path):
    """Meta sam3 issue #606: every key under an unknown prefix leaves a random model."""
    _save(load_model("tiny"), tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    save_file({f"model.{k}": v for k, v in load_file(weights).items()}, weights)
    with pytest.raises(WeightsNotLoadedError, match=r"MISSING \(randomly initialised\)"):
        load_model(tmp_path / "m")
    bundle = load_model(tmp_path / "m", allow_missing_weights=True)
    assert not bundle.report.weights_loaded and len(bundle.report.unexpected) > 100
    with pytest.raises(WeightsNotLoadedError, match="Refusing to fine-tune"):
        build_training_model(bundle, ModelConfig(name=str(tmp_path / "m")))
    build_training_model(bundle, ModelConfig(name=str(tmp_path / "m"), allow_missing_weights=True))


def test_missing_weights_unused_by_training_are_tolerated(tmp_path):
    _save(load_model("tiny"), tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    tensors = load_file(weights)
    save_file(
        {
            k: v
            for k, v in tensors.items()
            if not k.startswith(("geometry_encoder.", "detr_decoder.box_head."))
        },
        weights,
    )
    with pytest.raises(WeightsNotLoadedError, match=r"detr_decoder\.box_head"):
        load_model(tmp_path / "m")
    save_file({k: v for k, v in tensors.items() if not k.startswith("geometry_encoder.")}, weights)
    bundle = load_model(tmp_path / "m")
    assert bundle.report.weights_loaded
    assert bundle.report.harmless_missing and all(
        k.startswith("geometry_encoder.") for k in bundle.report.missing
    )
    assert "missing but unused in training" in bundle.report.summary()


def test_unexpected_keys_are_reported(tmp_path):
    _save(load_model("tiny"), tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    save_file({**load_file(weights), "extra_head.weight": torch.zeros(2)}, weights)
    bundle = load_model(tmp_path / "m")
    assert bundle.report.weights_loaded and bundle.report.unexpected == ["extra_head.weight"]


def test_directory_that_is_not_a_model_fails_clearly(tmp_path):
    with pytest.raises(ModelSpecError, match=r"no config\.json"):
        load_model(tmp_path)


def test_pickle_weights_are_not_loaded(tmp_path):
    _save(load_model("tiny"), tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").unlink()
    torch.save({}, tmp_path / "m" / "pytorch_model.bin")
    with pytest.raises(OSError, match="safetensors"):
        load_model(tmp_path / "m")


def test_truncated_weights_name_the_file(tmp_path):
    _save(load_model("tiny"), tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ValueError, match=rf"weights file {re.escape(str(weights))} is truncated or corrupt"):
        load_model(tmp_path / "m")


def test_architecture_from_yaml_file(tmp_path):
    import dataclasses

    import yaml

    fields = dataclasses.asdict(NAMED_ARCHITECTURES["tiny"])
    fields.update(num_queries=4, vit_global_attn_indexes=[0, 1])
    (tmp_path / "arch.yaml").write_text(yaml.safe_dump(fields))
    bundle = load_model(tmp_path / "arch.yaml")
    assert bundle.model.config.detr_decoder_config.num_queries == 4
    assert bundle.model.config.vision_config.backbone_config.global_attn_indexes == [0, 1]
    (tmp_path / "bad.yaml").write_text("num_querys: 4\n")
    with pytest.raises(ValueError, match="num_querys"):
        load_model(tmp_path / "bad.yaml")
