import random

import numpy as np
import torch

from sam3tune.train.checkpoint import load_checkpoint, save_checkpoint
from sam3tune.train.rng_state import capture_rng_state, preserved_rng_state, restore_rng_state


def _draw():
    return (random.random(), float(np.random.rand()), float(np.random.randn()), torch.rand(3).tolist())


def test_restore_repeats_every_stream_through_a_checkpoint_file(tmp_path):
    np.random.randn()  # leaves a cached gaussian in numpy's state
    state = capture_rng_state()
    save_checkpoint(tmp_path / "c", {"w": torch.zeros(1)}, {"rng": state}, {})
    first = _draw()
    _draw()
    restore_rng_state(load_checkpoint(tmp_path / "c")[1]["rng"])  # loaded with weights_only=True
    assert _draw() == first


def test_preserved_state_block_does_not_move_the_streams():
    state = capture_rng_state()
    expected = _draw()
    restore_rng_state(state)
    with preserved_rng_state():
        _draw()
        _draw()
    assert _draw() == expected
