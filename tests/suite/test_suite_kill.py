"""A suite killed (SIGKILL) in the middle of a fine-tune continues from that run's checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from sam3tune.cli import main
from tests.train.coco_fixture import write_split


@pytest.mark.slow
def test_a_killed_suite_continues_where_it_stopped(tmp_path, capsys):
    write_split(tmp_path / "data" / "train", 8, seed=0)
    write_split(tmp_path / "data" / "test", 4, seed=1)
    run = [
        "model.name=tiny",
        "loop.num_workers=0",
        "loop.batch_size=1",
        "loop.epochs=20",
        "loop.checkpoint_every_steps=1",
    ]
    suite = {
        "datasets": [{"name": "blocks", "root": str(tmp_path / "data")}],
        "seeds": [1, 2],
        "shots": 2,
        "base_overrides": run,
        "eval": {"batch_size": 4, "num_workers": 0, "iou_types": ["bbox"]},
        "device": "cpu",
        "output_dir": str(tmp_path / "out"),
    }
    (tmp_path / "suite.yaml").write_text(json.dumps(suite))
    command = [sys.executable, "-m", "sam3tune", "suite", "--config", str(tmp_path / "suite.yaml")]
    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    checkpoint = tmp_path / "out" / "blocks" / "seed-1" / "checkpoints" / "last" / "meta.json"
    deadline = time.monotonic() + 600
    while not checkpoint.is_file() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    assert (tmp_path / "out" / "blocks" / "zero-shot" / "eval.json").is_file()
    assert not (tmp_path / "out" / "blocks" / "seed-1" / "model").exists()  # killed mid-run

    assert main(["suite", "--config", str(tmp_path / "suite.yaml")]) == 0
    err = capsys.readouterr().err
    assert "1 finished, 4 to run" in err and "continuing" in err and "seed-1 from its last checkpoint" in err
    resumed = json.loads(
        (tmp_path / "out" / "blocks" / "seed-1" / "resumes.jsonl").read_text().splitlines()[0]
    )
    assert resumed["step"] >= 1
    summary = json.loads((tmp_path / "out" / "results.json").read_text())
    assert summary["suite"]["complete"] and summary["datasets"][0]["tuned"]["n"] == 2
