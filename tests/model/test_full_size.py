"""The released SAM 3 architecture (``sam3-random``, 840M, 1008 px) takes a real optimizer step on the CPU.

Slow (about 6 minutes and 14-19 GB per mode): ``flock /tmp/sam3tune-bigmem.lock pytest -m slow
tests/model/test_full_size.py``. Figures are recorded in docs/model.md.
"""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from tests.model.meta_sam3 import clip_bpe_file

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(3 * 3600)  # ~6 min each on 2 idle cores; hours on a shared, loaded machine
@pytest.mark.parametrize("mode", ["lora", "full"])
def test_one_full_size_step_per_mode(mode):
    clip_bpe_file()  # the CLIP tokenizer must be available (skips with the reason otherwise)
    done = subprocess.run(
        [sys.executable, "-m", "tests.model.full_size_step", mode],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(json.dumps(result))
    assert result["image_size"] == 1008
    assert math.isfinite(result["loss"]) and not result["skipped"]
    assert result["loss_mask"] > 0 and result["loss_dice"] > 0  # masks are part of the loss
    trainable = set(result["trainable_components"])
    expected = {"vision", "detr_encoder", "detr_decoder", "mask_decoder", "heads"}
    if mode == "full":
        expected.add("text")
        assert result["trainable"] > 800e6
    else:
        assert 5e6 < result["trainable"] < 30e6
    assert trainable == expected
    assert set(result["components_with_gradient"]) == trainable
    assert set(result["components_changed"]) == trainable
    assert result["peak_rss_gib"] < 20
