"""bench/memory_ladder.py: its CPU path is the same code as its GPU path, on the tiny architecture."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "memory_ladder.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_memory_ladder", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_rung_is_measured_in_process_and_tabled():
    bench = _bench()
    args = bench.parse_args(["--arch", "tiny", "--steps", "1"])
    rows = [bench.measure_rung(args, rung) for rung in args.rungs]
    assert [r["rung"] for r in rows] == ["full", "lora", "lora-decoder", "qlora-decoder"]
    for r in rows:
        assert r["total"] == r["weights"] + max(r["activations"] + r["optimizer"], r["optimizer_step"])
        assert r["step_s"] > 0 and r["watched_step_s"] > 0 and 10 < r["loss"] < 10_000
    trainable = [r["trainable"] for r in rows]
    assert trainable[0] > trainable[1] > trainable[2] == trainable[3]
    assert rows[3]["weights"] < rows[2]["weights"] < rows[0]["weights"]  # NF4 < bf16 < float32
    table = bench.markdown(rows, "title")
    lines = table.splitlines()
    assert lines[2].startswith("| rung | trainable params | weights | optimizer | activation peak")
    assert len(lines) == 4 + 4 and lines[-1].startswith("| qlora-decoder | ")


@pytest.mark.slow
def test_command_line_writes_json_and_markdown(tmp_path):
    out = tmp_path / "ladder"
    command = [sys.executable, str(SCRIPT), "--arch", "tiny", "--rungs", "lora-decoder,qlora-decoder"]
    done = subprocess.run([*command, "--threads", "1", "--out", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert [r["rung"] for r in rows] == ["lora-decoder", "qlora-decoder"]
    assert out.with_suffix(".md").read_text().count("\n| ") == 3  # header + 2 rows
