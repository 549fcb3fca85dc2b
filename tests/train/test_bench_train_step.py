"""bench/train_step.py: its CPU path is the same code as its GPU path, on the tiny architecture."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "train_step.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_train_step", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_mode_measures_the_real_training_step_in_process():
    bench = _bench()
    trainable = {}
    for mode in bench.MODES:
        args = bench.parse_args(["--arch", "tiny", "--batches", "1,2", "--warmup", "1", "--steps", "1"])
        rows = bench.run_mode(args, mode)
        assert [(r["mode"], r["images"], r["queries"]) for r in rows] == [(mode, 1, 4), (mode, 2, 8)]
        for row in rows:
            assert row["step_s"] > 0 and row["images_per_s"] > 0 and row["peak_gib"] > 0.1
            assert 10 < row["loss"] < 10_000  # the official total with masks, at initialisation
        trainable[mode] = rows[0]["trainable"]
    assert trainable["lora"] < trainable["full"] and trainable["frozen"] < trainable["full"]


@pytest.mark.slow
def test_command_line_runs_each_mode_in_its_own_process(tmp_path):
    out = tmp_path / "rows.json"
    command = [
        sys.executable, str(SCRIPT), "--arch", "tiny", "--batches", "1",
        "--warmup", "1", "--steps", "1", "--threads", "1", "--json", str(out),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(out.read_text())
    assert [r["mode"] for r in rows] == ["lora", "frozen", "full"]
    assert "images/s" in done.stdout
