"""bench/loss.py still runs (tiny sizes): both criteria on the same inputs, a ratio printed."""

import importlib.util
import re
import sys
from pathlib import Path

import pytest
from official_reference import unavailable_reason

REASON = unavailable_reason()


@pytest.mark.skipif(REASON is not None, reason=REASON or "")
def test_bench_runs_on_tiny_inputs(monkeypatch, capsys):
    path = Path(__file__).resolve().parents[2] / "bench" / "loss.py"
    spec = importlib.util.spec_from_file_location("bench_loss", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = ["--repeats", "1", "--batch-counts", "2,0", "--queries", "6", "--layers", "2", "--mask-size", "4"]
    monkeypatch.setattr(sys, "argv", ["loss.py", *args])
    bench.main()
    out = capsys.readouterr().out
    assert re.search(r"B=2 Q=6 layers=2 .* masks=4->14 px", out), out
    assert re.search(r"ratio ours/official \d+\.\d+", out), out
