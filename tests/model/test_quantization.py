"""Frozen weights in bf16 and the NF4 (QLoRA) base through bitsandbytes, on the tiny model."""

import sys

import pytest
import torch
from peft.tuners.lora import LoraLayer
from torch import nn

from sam3tune.model import FinetuneConfig, LoraConfig, ModelConfig, build_training_model, load_model
from sam3tune.model.export import merged_model, save_merged
from sam3tune.model.quantization import is_quantized
from sam3tune.train.config import OptimConfig
from sam3tune.train.param_groups import make_optimizer

DECODER = FinetuneConfig(
    mode="lora",
    freeze=["vision", "text"],
    lora=LoraConfig(components=["detr_encoder", "detr_decoder", "mask_decoder"], dropout=0.0),
)


def _inputs(model):
    size = model.image_size
    generator = torch.Generator().manual_seed(3)
    pixels = torch.randn(2, 3, size, size, generator=generator)
    ids = torch.randint(1, 500, (3, 4), generator=generator)
    return pixels, torch.tensor([0, 1, 1]), ids, torch.ones(3, 4, dtype=torch.long)


def _perturb_adapters(model, scale):
    """Give every LoRA B matrix non-zero values (as training would), so that merging matters."""
    generator = torch.Generator().manual_seed(7)
    for module in model.modules():
        if isinstance(module, LoraLayer):
            for b in module.lora_B.values():
                b.weight.data = scale * torch.randn(b.weight.shape, generator=generator)


def test_nf4_base_exports_a_float32_model_that_predicts_the_same():
    config = ModelConfig(name="tiny", quantization="nf4", detr_dropout=0.0, finetune=DECODER)
    model = build_training_model(load_model("tiny"), config).eval()
    assert is_quantized(model)
    four_bit = [m for m in model.modules() if type(m).__name__ == "Linear4bit"]
    assert len(four_bit) > 10 and all(m.weight.dtype == torch.uint8 for m in four_bit)
    trained = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trained and all("lora_" in n or "modules_to_save" in n for n in trained)
    _perturb_adapters(model, 0.5)
    with torch.no_grad():
        expected = model(*_inputs(model))
    plain = merged_model(model.sam3)
    assert not is_quantized(plain) and {p.dtype for p in plain.parameters()} == {torch.float32}
    assert is_quantized(model)  # the training model is left as it was
    again = build_training_model(_bundle_of(plain), ModelConfig(name="tiny", detr_dropout=0.0)).eval()
    with torch.no_grad():
        got = again(*_inputs(again))
    for key in ("pred_logits", "pred_boxes", "pred_masks"):
        torch.testing.assert_close(got[key], expected[key], atol=2e-4, rtol=1e-4)


def _bundle_of(sam3):
    bundle = load_model("tiny")
    bundle.model = sam3
    return bundle


def test_bf16_frozen_weights_keep_norms_and_trained_parameters_in_float32_and_merge_in_float32(tmp_path):
    config = ModelConfig(name="tiny", frozen_dtype="auto", finetune=DECODER)
    model = build_training_model(load_model("tiny"), config, bf16_autocast=True)
    for name, module in model.named_modules():
        for param in module.parameters(recurse=False):
            if param.requires_grad or isinstance(module, nn.LayerNorm | nn.GroupNorm) or param.dim() < 1:
                assert param.dtype == torch.float32, name
    assert any(p.dtype == torch.bfloat16 for p in model.parameters())
    # an adapter update far below bf16's resolution of the base weight survives the merge
    _perturb_adapters(model, 1e-3)
    layer = next(m for m in model.modules() if isinstance(m, LoraLayer))
    delta = layer.get_delta_weight("default").float()
    base = layer.base_layer.weight.float()
    name = next(n for n, m in model.sam3.named_modules() if m is layer)
    merged = dict(merged_model(model.sam3).named_parameters())[
        name.removeprefix("base_model.model.") + ".weight"
    ]
    torch.testing.assert_close(merged - base, delta, atol=1e-7, rtol=1e-5)
    assert delta.abs().max() < 1e-2 * base.abs().max()  # would round away in bf16
    save_merged(model, tmp_path / "m")
    assert load_model(tmp_path / "m").model.dtype == torch.float32


def test_auto_frozen_dtype_follows_the_precision():
    config = ModelConfig(name="tiny", frozen_dtype="auto", finetune=DECODER)
    model = build_training_model(load_model("tiny"), config, bf16_autocast=False)
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_nf4_needs_lora_and_bitsandbytes(monkeypatch):
    with pytest.raises(ValueError, match=r"needs finetune\.mode=lora"):
        build_training_model(load_model("tiny"), ModelConfig(name="tiny", quantization="nf4"))
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # as if not installed
    config = ModelConfig(name="tiny", quantization="nf4", finetune=DECODER)
    with pytest.raises(ImportError, match=r"model.quantization=nf4 needs bitsandbytes.*sam3tune\[qlora\]"):
        build_training_model(load_model("tiny"), config)
    with pytest.raises(ImportError, match=r"optim.optimizer=adamw8bit needs bitsandbytes"):
        make_optimizer([{"params": [nn.Parameter(torch.zeros(2))]}], OptimConfig(optimizer="adamw8bit"))


def test_eight_bit_adamw_keeps_one_byte_per_moment():
    big = nn.Parameter(torch.randn(64, 128))  # 8,192 values: above bitsandbytes' 4,096 minimum
    optimizer = make_optimizer([{"params": [big]}], OptimConfig(optimizer="adamw8bit"))
    before = big.detach().clone()
    big.grad = torch.randn_like(big)
    optimizer.step()
    state = optimizer.state[big]
    assert state["state1"].dtype == state["state2"].dtype == torch.uint8
    assert state["state1"].numel() == big.numel()
    assert not torch.equal(big.detach(), before)
    assert type(make_optimizer([{"params": [big]}], OptimConfig())) is torch.optim.AdamW
