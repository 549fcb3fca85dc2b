"""bench/exemplar_demo.py still runs end to end (a few steps on a few images; slow: ~2 min on 2 cores)."""

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "exemplar_demo.py"


@pytest.mark.slow
def test_exemplar_demo_bench_prints_text_and_exemplar_ap(tmp_path):
    out = tmp_path / "demo"
    args = [
        "--out",
        str(out),
        "--steps",
        "3",
        "--train-images",
        "16",
        "--heldout-images",
        "8",
        "--threads",
        "1",
    ]
    run = subprocess.run([sys.executable, str(BENCH), *args], capture_output=True, text=True, timeout=1200)
    assert run.returncode in (0, 1), run.stderr[-2000:]  # 1: three steps need not beat zero-shot
    for row in (
        "text prompts: box AP50",
        "exemplar box: box AP50 (others only)",
        'exemplar box AP50 (others) "star"',
    ):
        assert row in run.stdout
    assert (out / "eval" / "eval.md").read_text().count("## Exemplar prompts") == 1
    assert (out / "eval" / "predictions_exemplar.json").is_file()
