"""The memorisation check (bench/memorise.py): the whole pipeline fits 8 images from scratch, bbox AP50
>= 0.5 on those images within 10 minutes on 2 CPU cores."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "memorise.py"


@pytest.mark.slow
def test_small_model_memorises_eight_images(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_memorise", SCRIPT)
    memorise = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(memorise)
    ap50, minutes, result = memorise.run_memorisation(images=8, steps=500, out=tmp_path)  # on one thread
    assert result.status == "completed" and result.steps == 500
    assert ap50 >= 0.5, f"train-set bbox AP50 {ap50:.3f} after {minutes:.1f} min"
    assert minutes < 10
