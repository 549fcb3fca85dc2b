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


def test_ladder_measures_each_rung_on_the_same_batch(shapes):
    """``doctor --ladder``: each rung's model built fresh, one watched step each; the counted parts follow
    the rung (fewer trained parameters down the ladder, bf16 frozen weights, 8-bit AdamW state), and the
    report prints one row per rung."""
    from sam3tune.doctor.ladder import ladder_memory
    from sam3tune.doctor.text_report import format_ladder
    from sam3tune.train.config import TrainConfig
    from sam3tune.train.memory_ladder import LADDER

    bundle = load_model("tiny")
    dataset = build_train_dataset(DataConfig(root=shapes, resolution=64), progress=False)
    batch = collate([dataset[0], dataset[1]], tokenize=bundle.tokenize)
    config = TrainConfig()
    config.model.name = "tiny"
    rows = ladder_memory(config, batch, torch.device("cpu"))
    assert [r.rung for r in rows] == list(LADDER) and all(r.error is None for r in rows)
    by = {r.rung: r for r in rows}
    trained = [by[r].trainable for r in LADDER]
    assert trained[0] > trained[1] > trained[2] == trained[3]
    for r in rows:
        m = r.memory
        # float32 gradients: 4 bytes per trained parameter, each tensor rounded up to a 512-byte block
        assert 4 * r.trainable <= m.gradients < 4 * r.trainable + 512 * 300 and m.activations > 0
        assert m.total == m.weights + max(m.activations + m.optimizer_state, m.optimizer_step)
    # AdamW: two float32 moments per trained parameter (rounded to allocator blocks per tensor)
    assert by["full"].memory.optimizer_state >= 8 * by["full"].trainable
    # frozen weights in bf16 (lora-decoder) and NF4 Linear layers (qlora-decoder) take less than float32
    assert by["qlora-decoder"].memory.weights < by["lora-decoder"].memory.weights < by["full"].memory.weights
    text = "\n".join(format_ladder(rows))
    assert all(rung in text for rung in LADDER)
