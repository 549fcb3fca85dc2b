"""Whole-process checks of ``sam3tune train``: a run killed with SIGKILL resumes to the uninterrupted
run's losses (slow), and torchrun with 2 gloo processes on split batches equals one process on whole
batches."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from coco_fixture import write_dataset

from sam3tune.config import load_config
from sam3tune.train.config import TrainConfig
from sam3tune.train.metrics_log import read_metrics
from sam3tune.train.recipe import train

ROOT = Path(__file__).resolve().parents[2]
COMMON = [
    "model.name=tiny",
    "loop.num_workers=0",
    "loop.batch_size=2",
    "loop.epochs=2",
    "val.every_epochs=1",
    "val.eval.num_workers=0",
]


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _records(run_dir, kind="train"):
    return [r for r in read_metrics(Path(run_dir) / "metrics.jsonl") if r["kind"] == kind]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(predicate, process, timeout=300.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if process.poll() is not None:
            raise AssertionError(f"training ended before the kill (status {process.returncode})")
        time.sleep(0.05)
    raise AssertionError("timed out waiting for the training process")


@pytest.mark.slow
def test_sigkilled_run_resumes_to_the_same_losses(tmp_path):
    data = write_dataset(tmp_path / "data", train=8, valid=2)
    args = [f"output_dir={tmp_path}", *COMMON, "loop.checkpoint_every_steps=2"]
    reference = train(load_config(TrainConfig, None, [f"data.root={data}", "run_name=reference", *args]))

    command = [sys.executable, "-m", "sam3tune", "train", "--data", str(data), "run_name=run", *args]
    process = subprocess.Popen(command, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL)
    run = tmp_path / "run"
    # kill after the checkpoint of step 2 exists and step 3 was logged past it (the log must be trimmed)
    _wait_for(lambda: (run / "checkpoints" / "last").exists() and len(_records(run)) >= 3, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    killed_at = len(_records(run))
    assert killed_at < 8

    resumed = subprocess.run(
        [sys.executable, "-m", "sam3tune", "train", "--resume", str(run)],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    ours = [(r["step"], r["loss"]) for r in _records(run)]
    theirs = [(r["step"], r["loss"]) for r in _records(reference.run_dir)]
    assert ours == theirs
    val = [r["loss"] for r in _records(run, "val")]
    assert val == [r["loss"] for r in _records(reference.run_dir, "val")]


def test_torchrun_two_gloo_processes_equal_one_process(tmp_path):
    data = write_dataset(tmp_path / "data", train=8, valid=3)
    # no dropout (random per process) and no sqrt(queries) scaling of the total (it uses the per-process
    # query count, as Meta's trainer does): then the mean of the per-process losses is the whole-batch loss
    exact = ["model.detr_dropout=0.0", "loss.scale_by_find_batch_size=false", f"output_dir={tmp_path}"]
    base = [
        "model.name=tiny",
        "loop.num_workers=0",
        "loop.epochs=2",
        "val.every_epochs=1",
        "val.eval.num_workers=0",
        *exact,
    ]
    one_process = [f"data.root={data}", "run_name=one", "loop.batch_size=2", *base]
    single = train(load_config(TrainConfig, None, one_process))
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
        f"--master_port={_free_port()}", "-m", "sam3tune", "train", "--data", str(data),
        "run_name=two", "loop.batch_size=1", "loop.device=cpu", *base,
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = _records(single.run_dir), _records(tmp_path / "two")
    assert [r["step"] for r in one] == [r["step"] for r in two] == list(range(1, 9))
    for a, b in zip(one, two, strict=True):
        for key in ("loss", "loss_ce", "presence_loss", "loss_bbox", "loss_giou", "loss_mask", "loss_dice"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), (a["step"], key)
