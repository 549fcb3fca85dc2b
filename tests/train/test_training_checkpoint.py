import json
import os

import pytest
import torch
from train_standins import ToyModel

from sam3tune.train.checkpoint import (
    CheckpointError,
    find_checkpoint,
    load_checkpoint,
    load_model_state,
    model_state_to_save,
    save_checkpoint,
)


def _state(step):
    return {"step": step, "optimizer": {"state": {0: {"exp_avg": torch.full((2,), float(step))}}}}


def test_round_trip_keeps_tensors_and_plain_data(tmp_path):
    model = ToyModel()
    path = tmp_path / "checkpoints" / "last"
    save_checkpoint(path, model_state_to_save(model), _state(7), {"step": 7})
    model_state, training_state, meta = load_checkpoint(path)
    assert meta == {"step": 7}
    assert training_state["step"] == 7
    assert torch.equal(training_state["optimizer"]["state"][0]["exp_avg"], torch.full((2,), 7.0))
    for name, tensor in model.state_dict().items():
        assert torch.equal(model_state[name], tensor)
    assert sorted(os.listdir(path.parent)) == ["last"]  # no temp or old copy left behind


def test_overwrite_replaces_the_previous_checkpoint(tmp_path):
    path = tmp_path / "last"
    save_checkpoint(path, {"w": torch.zeros(2)}, _state(1), {"step": 1})
    save_checkpoint(path, {"w": torch.ones(2)}, _state(2), {"step": 2})
    model_state, training_state, _ = load_checkpoint(path)
    assert training_state["step"] == 2 and torch.equal(model_state["w"], torch.ones(2))
    assert sorted(os.listdir(tmp_path)) == ["last"]


def test_crash_while_writing_leaves_previous_checkpoint(tmp_path):
    path = tmp_path / "last"
    save_checkpoint(path, {"w": torch.zeros(2)}, _state(1), {"step": 1})
    # a crash mid-write leaves a partial temp directory: it is ignored and replaced by the next save
    (tmp_path / "last.tmp").mkdir()
    (tmp_path / "last.tmp" / "model.safetensors").write_bytes(b"partial")
    assert load_checkpoint(path)[1]["step"] == 1
    save_checkpoint(path, {"w": torch.ones(2)}, _state(2), {"step": 2})
    assert load_checkpoint(path)[1]["step"] == 2


def test_crash_between_the_renames_falls_back_to_old(tmp_path):
    path = tmp_path / "last"
    save_checkpoint(path, {"w": torch.zeros(2)}, _state(1), {"step": 1})
    os.rename(path, tmp_path / "last.old")  # the state right after the first rename
    assert find_checkpoint(path) == tmp_path / "last.old"
    assert load_checkpoint(path)[1]["step"] == 1
    save_checkpoint(path, {"w": torch.ones(2)}, _state(2), {"step": 2})
    assert sorted(os.listdir(tmp_path)) == ["last"]


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        load_checkpoint(tmp_path / "last")


def test_frozen_parameters_are_not_saved_and_trainable_ones_are_restored(tmp_path):
    model = ToyModel()
    for param in model.vision_encoder.parameters():
        param.requires_grad_(False)
    state = model_state_to_save(model)
    assert not any(name.startswith("vision_encoder.") for name in state)
    assert "detr_decoder.fuse.weight" in state
    save_checkpoint(tmp_path / "c", state, _state(0), {})
    other = ToyModel()
    for param in other.vision_encoder.parameters():
        param.requires_grad_(False)
    load_model_state(other, load_checkpoint(tmp_path / "c")[0], tmp_path / "c")
    assert torch.equal(other.detr_decoder.fuse.weight, model.detr_decoder.fuse.weight)
    assert not torch.equal(other.vision_encoder.neck.weight, model.vision_encoder.neck.weight)


def test_model_mismatch_names_the_tensors(tmp_path):
    model = ToyModel()
    with pytest.raises(CheckpointError, match="missing") as info:
        load_model_state(model, {"detr_decoder.fuse.weight": model.detr_decoder.fuse.weight}, tmp_path)
    assert "detr_decoder.box_head" in str(info.value) or "text_encoder" in str(info.value)
    state = model_state_to_save(model)
    state["detr_decoder.fuse.weight"] = torch.zeros(3, 3)
    with pytest.raises(CheckpointError, match=r"fuse.weight has shape \(3, 3\)"):
        load_model_state(model, state, tmp_path)


def test_meta_is_readable_json(tmp_path):
    save_checkpoint(tmp_path / "best", {"w": torch.zeros(1)}, _state(3), {"step": 3, "best_value": 0.5})
    assert json.loads((tmp_path / "best" / "meta.json").read_text())["best_value"] == 0.5
