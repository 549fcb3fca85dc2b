"""``sam3-random``: the released architecture, untrained, built offline (full build: test_full_size.py)."""

import pytest
import torch
from transformers import Sam3Config

from sam3tune.model import load_model
from sam3tune.model.architectures import SAM3_RANDOM, architecture_names, build_sam3_random
from sam3tune.model.hub import ModelSpecError


def test_sam3_random_is_the_released_architecture():
    with torch.device("meta"):
        model = build_sam3_random()
    assert model.config.to_dict() == Sam3Config().to_dict()
    assert model.config.image_size == 1008
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(840.4e6, rel=1e-3)
    assert SAM3_RANDOM in architecture_names() and "tiny" in architecture_names()


def test_sam3_random_without_the_bpe_file_says_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setenv("SAM3TUNE_CLIP_BPE", str(tmp_path / "missing.txt.gz"))
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(ModelSpecError, match=r"SAM3TUNE_CLIP_BPE=.*pip install --no-deps open_clip_torch"):
        load_model("sam3-random")
