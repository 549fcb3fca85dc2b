"""The memory ladder: every rung trains the tiny model on the CPU, the automatic choice on simulated GPUs,
and the step down after a simulated CUDA out-of-memory error."""

import re

import pytest
import torch
from coco_fixture import write_dataset
from transformers import Sam3Config, Sam3Model

from sam3tune.config import load_config
from sam3tune.model import component_of
from sam3tune.run_dir import RunDir
from sam3tune.train import memory_ladder, recipe
from sam3tune.train.checkpoint import load_checkpoint
from sam3tune.train.config import TrainConfig
from sam3tune.train.loop import Trainer
from sam3tune.train.memory_ladder import LADDER, choose_rung, estimate, fits, rung_config
from sam3tune.train.metrics_log import read_metrics
from sam3tune.train.recipe import train

GIB = 2**30
FAST = [
    "model.name=tiny",
    "loop.num_workers=0",
    "loop.batch_size=2",
    "loop.epochs=1",
    "val.every_epochs=0",
]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("data"), train=8, valid=2)


def _config(dataset, output, *extra):
    return load_config(TrainConfig, None, [f"data.root={dataset}", f"output_dir={output}", *FAST, *extra])


def _losses(run_dir):
    return [(r["step"], r["loss"]) for r in read_metrics(run_dir / "metrics.jsonl") if r["kind"] == "train"]


@pytest.mark.parametrize("rung", LADDER)
def test_every_rung_trains_the_tiny_model_on_the_cpu(dataset, tmp_path, rung):
    # bf16 autocast as on a GPU: frozen weights are stored in bf16 (and NF4 layers compute in bf16)
    result = train(_config(dataset, tmp_path, "run_name=r", f"loop.memory={rung}", "loop.amp=bf16"))
    assert result.status == "completed" and result.steps == 4 and result.skipped_steps == 0
    losses = [loss for _, loss in _losses(result.run_dir)]
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses)))
    text = (result.run_dir / "config.yaml").read_text()
    assert text.startswith(f"# loop.memory={rung}: forced")
    resolved = RunDir(result.run_dir).config()
    assert resolved.loop.memory == rung and resolved.model.activation_checkpointing
    assert (resolved.model.quantization == "nf4") == (rung == "qlora-decoder")
    assert (resolved.optim.optimizer == "adamw8bit") == (rung == "qlora-decoder")
    state = load_checkpoint(result.run_dir / "checkpoints" / "last")[0]
    adapted = {component_of(name) for name in state if "lora_" in name}
    decoder = {"detr_encoder", "detr_decoder", "mask_decoder"}
    assert adapted == {"full": set(), "lora": decoder | {"vision"}}.get(rung, decoder)
    if rung != "full":
        assert any("modules_to_save" in name for name in state)  # the heads train in full
    # the export is a plain float32 transformers model (NF4 layers dequantised, adapters merged)
    model = Sam3Model.from_pretrained(result.run_dir / "model")
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_rung_overrides_replace_the_setup_of_the_config():
    config = load_config(TrainConfig, None, ["model.finetune.lora.rank_per_component={vision: 4}"])
    decoder = rung_config(config, "lora-decoder")
    assert decoder.model.finetune.mode == "lora" and decoder.model.finetune.freeze == ["vision", "text"]
    assert decoder.model.finetune.lora.components == ["detr_encoder", "detr_decoder", "mask_decoder"]
    assert decoder.model.finetune.lora.rank_per_component == {}  # vision is not adapted on this rung
    assert decoder.loop.memory == "lora-decoder" and decoder.model.frozen_dtype == "auto"
    with pytest.raises(ValueError, match="not a rung"):
        rung_config(config, "tiny")


FULL_SIZE = Sam3Config()
CUDA = torch.device("cuda")  # a device object only: nothing runs on it


@pytest.fixture(scope="module")
def full_size_estimates():
    return {r: estimate(FULL_SIZE, rung_config(TrainConfig(), r), queries_per_step=4) for r in LADDER}


def test_counted_memory_of_the_full_size_rungs(full_size_estimates):
    e = full_size_estimates
    # trained parameters as docs/model.md counts them: 830.3M full, 13.5M LoRA defaults
    assert e["full"].trainable == pytest.approx(830.3e6, rel=1e-3)
    assert e["lora"].trainable == pytest.approx(13.47e6, rel=1e-3)
    assert e["lora-decoder"].trainable < e["lora"].trainable / 3
    assert e["qlora-decoder"].trainable == e["lora-decoder"].trainable
    # AdamW: 8 bytes per trained parameter, 8-bit AdamW 2; gradients in float32
    assert e["full"].optimizer == 8 * e["full"].trainable and e["full"].gradients == 4 * e["full"].trainable
    # at the reference batch the estimate is the measured step: weights + optimizer + activation peak
    assert e["full"].total == e["full"].weights + e["full"].optimizer + e["full"].activations
    assert e["qlora-decoder"].optimizer == 2 * e["qlora-decoder"].trainable
    # frozen weights in bf16 halve the base, NF4 takes it to about a quarter of that
    assert 0.45 < e["lora-decoder"].weights / e["full"].weights < 0.55
    assert e["qlora-decoder"].weights < 0.4 * e["lora-decoder"].weights
    totals = [e[r].total for r in LADDER]
    assert totals == sorted(totals, reverse=True)  # the ladder goes down


@pytest.mark.parametrize("gib", [8, 12, 16, 24, 40, 48, 80, 141])
def test_auto_picks_the_highest_rung_that_fits_a_simulated_gpu(full_size_estimates, gib):
    config = load_config(TrainConfig, None, [])
    expected = next((r for r in LADDER if fits(full_size_estimates[r], gib * GIB)), None)
    if expected is None:
        with pytest.raises(MemoryError, match="no rung fits"):
            choose_rung(config, FULL_SIZE, CUDA, 4, device_bytes=gib * GIB)
        return
    choice = choose_rung(config, FULL_SIZE, CUDA, 4, device_bytes=gib * GIB)
    assert choice.rung == expected and choice.config.loop.memory == expected
    assert choice.reason.startswith(f"loop.memory=auto chose {expected}: estimated peak")
    assert [e.rung for e in choice.estimates] == list(LADDER[: LADDER.index(expected) + 1])
    assert fits(choice.estimates[-1], gib * GIB)
    assert not any(fits(e, gib * GIB) for e in choice.estimates[:-1])


def test_auto_on_common_gpus_with_the_measured_references():
    """With the activation peaks measured on the full-size model (bench/memory_ladder.py): full on 24 GB
    and up, LoRA on 6-16 GB, QLoRA decoder-only on 4 GB; more queries per step push the choice down."""
    config = TrainConfig()
    chosen = {
        gb: choose_rung(config, FULL_SIZE, CUDA, 4, device_bytes=gb * 10**9).rung for gb in (4, 8, 16, 24, 80)
    }
    assert chosen == {4: "qlora-decoder", 8: "lora", 16: "lora", 24: "full", 80: "full"}
    assert choose_rung(config, FULL_SIZE, CUDA, 64, device_bytes=40 * 10**9).rung == "lora-decoder"
    with pytest.raises(MemoryError, match="no rung fits"):
        choose_rung(config, FULL_SIZE, CUDA, 64, device_bytes=24 * 10**9)


def test_auto_never_trains_more_than_a_lora_config_asks():
    config = load_config(TrainConfig, None, ["model.finetune.mode=lora"])
    choice = choose_rung(config, FULL_SIZE, CUDA, 4, device_bytes=141 * GIB)
    assert choice.rung == "lora" and [e.rung for e in choice.estimates] == ["lora"]


def test_auto_off_cuda_and_off_keep_the_config_as_written():
    config = TrainConfig()
    on_cpu = choose_rung(config, FULL_SIZE, torch.device("cpu"), 4)
    assert on_cpu.rung is None and on_cpu.config.loop.memory == "off" and "cpu" in on_cpu.reason
    assert on_cpu.config.model == config.model
    off = rung_config(config, "lora")
    off.loop.memory = "off"
    assert choose_rung(off, FULL_SIZE, CUDA, 4, device_bytes=8 * GIB).config == off


def _simulate_gpu(monkeypatch, gib, oom_on=None, oom_at_step=0):
    """``loop.memory=auto`` sees a GPU of ``gib`` GiB; a step of rung ``oom_on`` at ``oom_at_step`` raises
    CUDA's out-of-memory error."""
    real_choose = memory_ladder.choose_rung

    def choose(config, sam3_config, device, queries, device_bytes=None):
        if config.loop.memory == "auto":
            return real_choose(config, sam3_config, device, queries, device_bytes=gib * GIB)
        return real_choose(config, sam3_config, device, queries, device_bytes)

    real_step = Trainer.train_step

    def step(self, micro_batches):
        if self.config.loop.memory == oom_on and self.progress.step == oom_at_step:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_step(self, micro_batches)

    monkeypatch.setattr(recipe, "choose_rung", choose)
    monkeypatch.setattr(Trainer, "train_step", step)


def test_out_of_memory_in_the_first_steps_restarts_one_rung_lower(dataset, tmp_path, monkeypatch):
    forced = train(_config(dataset, tmp_path, "run_name=forced", "loop.memory=lora"))
    _simulate_gpu(monkeypatch, 141, oom_on="full", oom_at_step=2)  # two steps logged, then the error
    result = train(_config(dataset, tmp_path, "run_name=auto"))
    assert result.status == "completed" and result.steps == 4
    text = (result.run_dir / "config.yaml").read_text()
    assert text.startswith("# loop.memory=auto stepped down to lora after an out-of-memory error")
    assert RunDir(result.run_dir).config().loop.memory == "lora"
    # the restarted run is the lora run from its first step: same losses (up to float summation order),
    # each step logged once
    restarted, direct = _losses(result.run_dir), _losses(forced.run_dir)
    assert [s for s, _ in restarted] == [s for s, _ in direct] == [1, 2, 3, 4]
    assert [v for _, v in restarted] == pytest.approx([v for _, v in direct], rel=1e-5)
    assert len(list((result.run_dir / "tb").iterdir())) == 1


def test_late_out_of_memory_names_the_rung_and_the_next_one(dataset, tmp_path, monkeypatch):
    _simulate_gpu(monkeypatch, 141, oom_on="lora-decoder", oom_at_step=1)
    with pytest.raises(
        torch.cuda.OutOfMemoryError, match=re.escape("rung lora-decoder; try loop.memory=qlora-decoder")
    ):
        # a forced rung never steps down: the error names the next rung to try
        train(_config(dataset, tmp_path, "run_name=late", "loop.memory=lora-decoder"))


def test_out_of_memory_after_a_checkpoint_is_an_error(dataset, tmp_path, monkeypatch):
    _simulate_gpu(monkeypatch, 141, oom_on="full", oom_at_step=2)
    with pytest.raises(torch.cuda.OutOfMemoryError, match=re.escape("rung full; try loop.memory=lora")):
        train(_config(dataset, tmp_path, "run_name=ckpt", "loop.checkpoint_every_steps=1"))
