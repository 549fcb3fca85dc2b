"""The tensor-by-tensor memory meter and the estimate built from it."""

import torch
from torch import nn

from sam3tune.data import DataConfig, build_train_dataset, collate
from sam3tune.doctor.memory import LiveTensorMeter, block_bytes, gradient_bytes, module_bytes
from sam3tune.doctor.step_probe import probe_training_step
from sam3tune.loss import Sam3Criterion
from sam3tune.model import ModelConfig, build_training_model, load_model
from sam3tune.train.config import OptimConfig
from sam3tune.train.param_groups import build_optimizer, role_of


def test_meter_counts_allocations_in_allocator_blocks():
    assert (block_bytes(1), block_bytes(512), block_bytes(513)) == (512, 512, 1024)
    meter = LiveTensorMeter()
    with meter:
        a = torch.empty(1000)  # 4000 bytes -> 4096
        b = a.view(10, 100)  # a view: no new storage
        c = torch.ones(300, dtype=torch.float64)  # 2400 -> 2560
        assert meter.live == 4096 + 2560
        del a, b
        assert meter.live == 2560
        d = c * 2
    assert meter.peak == 4096 + 2560 and meter.live == 2 * 2560
    del c, d
    assert meter.live == 0


def test_meter_ignores_views_and_in_place_results_of_older_tensors():
    weight = torch.zeros(256, 256)  # 256 KiB that exist before the meter
    meter = LiveTensorMeter()
    with meter:
        transposed = weight.t()
        weight.add_(1.0)
        product = transposed @ weight  # the one new allocation
    assert meter.peak == meter.live == block_bytes(product.numel() * 4)


def test_model_bytes():
    model = nn.Sequential(nn.Linear(10, 20), nn.LayerNorm(20))
    model[1].weight.requires_grad_(False)
    assert module_bytes(model) == 3 * block_bytes(4 * 20) + block_bytes(4 * 200)  # 3 vectors, 1 matrix
    assert gradient_bytes(model) == block_bytes(4 * 200) + 2 * block_bytes(4 * 20)


def test_step_memory_and_bf16_activations(shapes):
    """The probe's parts on the tiny model: AdamW keeps exactly two moments per gradient; bf16 autocast
    keeps fewer activation bytes than float32 for the same batch."""
    bundle = load_model("tiny")
    dataset = build_train_dataset(DataConfig(root=shapes, resolution=64), progress=False)
    batch = collate([dataset[0], dataset[1]], tokenize=bundle.tokenize)
    model = build_training_model(bundle, ModelConfig(name="tiny"))
    memories = {}
    for bf16 in (False, True):
        probe = probe_training_step(
            model,
            Sam3Criterion(),
            batch,
            build_optimizer(model, role_of, model.num_vit_blocks, OptimConfig()),
            bf16=bf16,
            max_grad_norm=0.1,
        )
        memories[bf16] = probe.memory
        assert probe.grad_norm > 0 and probe.no_gradient == {}
    fp32, bf16 = memories[False], memories[True]
    assert fp32.optimizer_state == 2 * fp32.gradients == 2 * gradient_bytes(model)
    assert fp32.weights == module_bytes(model) and fp32.precision == "float32"
    assert bf16.activations < 0.9 * fp32.activations
    assert fp32.optimizer_step >= fp32.gradients + fp32.optimizer_state
    assert fp32.total == fp32.weights + max(fp32.activations + fp32.optimizer_state, fp32.optimizer_step)
