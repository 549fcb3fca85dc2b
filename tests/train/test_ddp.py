"""Two CPU processes on gloo, each with half of every batch, train exactly like one process with the
whole batch (global num_boxes normalisation, DDP gradient averaging, per-rank data shards)."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from train_standins import ToyCriterion, ToyDataset, ToyModel, toy_collate, toy_role

from sam3tune.train.checkpoint import load_checkpoint
from sam3tune.train.config import LoopConfig, OptimConfig, ScheduleConfig, TrainConfig, ValidationConfig
from sam3tune.train.distributed import DistributedContext, init_distributed
from sam3tune.train.loop import Trainer, TrainingParts
from sam3tune.train.metrics_log import read_metrics


def _config(batch_size: int) -> TrainConfig:
    return TrainConfig(
        optim=OptimConfig(lr_transformer=1e-2, lr_vision=5e-3, lr_text=2e-3),
        schedule=ScheduleConfig(warmup_steps=1, cooldown_steps=1, timescale=2),
        loop=LoopConfig(epochs=2, batch_size=batch_size, num_workers=0, seed=4),
        val=ValidationConfig(every_epochs=1, best_metric="loss", best_mode="min"),
    )


def _parts() -> TrainingParts:
    torch.manual_seed(0)
    return TrainingParts(
        model=ToyModel(dropout=0.0),
        criterion=ToyCriterion(),
        train_dataset=ToyDataset(8, seed=1),
        collate_fn=toy_collate,
        role_of=toy_role,
        num_vit_blocks=ToyModel.num_vit_blocks,
        val_dataset=ToyDataset(3, seed=2),  # uneven shards: 2 and 1 images
        val_criterion=ToyCriterion(global_norm=False),
    )


def _worker(rank: int, world_size: int, port: int, run_dir: str) -> None:
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
    )  # fmt: skip
    torch.set_num_threads(1)
    context = init_distributed("cpu")
    try:
        Trainer(_config(batch_size=1), _parts(), run_dir, context).fit()
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow  # the real-model version (test_train_processes.py) runs by default
def test_two_gloo_processes_on_split_batches_equal_one_process_on_whole_batches(tmp_path):
    single = tmp_path / "single"
    cpu = DistributedContext(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))
    Trainer(_config(batch_size=2), _parts(), single, cpu).fit()

    split = tmp_path / "split"
    mp.spawn(_worker, args=(2, _free_port(), str(split)), nprocs=2, join=True)

    def records(run, kind):
        return [r for r in read_metrics(run / "metrics.jsonl") if r["kind"] == kind]

    one, two = records(single, "train"), records(split, "train")
    assert [r["step"] for r in two] == [r["step"] for r in one] == list(range(1, 9))
    for a, b in zip(one, two, strict=True):
        for key in ("loss", "loss_bbox", "loss_ce"):
            assert b[key] == pytest.approx(a[key], rel=1e-5), (a["step"], key)
    # validation ran over uneven shards (2 and 1 images) without a hang, before training and after each epoch
    steps = [r["step"] for r in records(split, "val")]
    assert steps == [r["step"] for r in records(single, "val")] == [0, 4, 8]
    weights_one = load_checkpoint(single / "checkpoints" / "last")[0]
    weights_two = load_checkpoint(split / "checkpoints" / "last")[0]
    for name, tensor in weights_one.items():
        torch.testing.assert_close(weights_two[name], tensor, rtol=1e-4, atol=1e-6)
    state = load_checkpoint(split / "checkpoints" / "last")[1]
    assert state["world_size"] == 2 and len(state["rng"]) == 2
