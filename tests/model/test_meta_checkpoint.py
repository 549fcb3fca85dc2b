"""Meta checkpoints -> Sam3Model: the key mapping at full size (both models on the meta device), the
checkpoint layouts Meta's code writes, and the import command's refusals."""

import collections

import pytest
import torch
from safetensors.torch import save_file
from transformers import Sam3Config, Sam3Model

from sam3tune.cli import main
from sam3tune.model.meta_checkpoint import (
    MetaCheckpointError,
    convert_state_dict,
    load_meta_checkpoint,
    meta_state_dict,
)
from tests.model.meta_sam3 import build_meta_image_model


@pytest.fixture(scope="module")
def full_size_keys():
    meta = build_meta_image_model("meta").state_dict()
    with torch.device("meta"):
        hf = Sam3Model(Sam3Config()).state_dict()
    return meta, hf


def test_every_meta_key_maps_to_one_hf_key_and_every_hf_key_is_covered(full_size_keys):
    meta, hf = full_size_keys
    converted, dropped = convert_state_dict(meta)
    assert set(converted) == set(hf)
    assert all(converted[k].shape == hf[k].shape for k in hf)
    # the only Meta tensors without a counterpart: 32 rotary tables, 6 point-prompt projections
    kinds = collections.Counter(dropped.values())
    assert sorted(kinds.values()) == [6, 32] and all(".freqs_cis" in k or ".points_" in k for k in dropped)
    # each remaining Meta key fills exactly one HF key, or three for a fused q/k/v projection
    fused = [k for k in meta if k not in dropped and (".qkv." in k or ".in_proj_" in k)]
    assert len(meta) - len(dropped) + 2 * len(fused) == len(hf)
    assert len(meta) == 1134 and len(hf) == 1468


def test_values_move_with_their_keys():
    meta = {
        "backbone.vision_backbone.trunk.pos_embed": torch.arange(3 * 2.0).reshape(1, 3, 2),
        "backbone.vision_backbone.trunk.blocks.0.attn.qkv.weight": torch.arange(6 * 2.0).reshape(6, 2),
        "backbone.language_backbone.encoder.text_projection": torch.arange(6.0).reshape(2, 3),
        "transformer.decoder.layers.1.norm1.weight": torch.tensor([1.0, 2.0]),
        "transformer.encoder.layers.0.cross_attn_image.in_proj_bias": torch.arange(6.0),
        "transformer.decoder.bbox_embed.layers.2.bias": torch.tensor([7.0]),
    }
    out, _ = convert_state_dict(meta)
    assert out["vision_encoder.backbone.embeddings.position_embeddings"].tolist() == [[[2, 3], [4, 5]]]
    vit = "vision_encoder.backbone.layers.0.attention."
    assert out[vit + "q_proj.weight"].tolist() == [[0, 1], [2, 3]]
    assert out[vit + "v_proj.weight"].tolist() == [[8, 9], [10, 11]]
    assert torch.equal(out["text_encoder.text_projection.weight"], meta[
        "backbone.language_backbone.encoder.text_projection"].t())  # fmt: skip
    assert out["detr_decoder.layers.1.vision_cross_attn_layer_norm.weight"].tolist() == [1, 2]
    assert out["detr_encoder.layers.0.cross_attn.k_proj.bias"].tolist() == [2, 3]
    assert out["detr_decoder.box_head.layer3.bias"].tolist() == [7]


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: sd,
        lambda sd: {"model": sd, "optimizer": {}, "epoch": 3},  # Meta's trainer
        lambda sd: {f"module.{k}": v for k, v in sd.items()},  # DDP
        lambda sd: {"model": {f"module.{k}": v for k, v in sd.items()}},
        lambda sd: {
            **{f"detector.{k}": v for k, v in sd.items()},
            "tracker.maskmem_tpos_enc": torch.zeros(1),
        },
    ],
    ids=["plain", "trainer", "ddp", "trainer-ddp", "sam3.pt"],
)
def test_checkpoint_layouts_unwrap_to_the_image_model(wrap):
    state = {
        "transformer.decoder.norm.weight": torch.ones(2),
        "dot_prod_scoring.hs_proj.bias": torch.zeros(2),
    }
    assert meta_state_dict(wrap(state)).keys() == state.keys()


def test_the_trackers_neck_copy_is_left_out_by_name():
    _, dropped = convert_state_dict({"backbone.vision_backbone.sam2_convs.0.conv_1x1.weight": torch.zeros(1)})
    assert "tracker's copy of the FPN neck" in next(iter(dropped.values()))


def test_unknown_keys_are_named():
    with pytest.raises(MetaCheckpointError, match=r"no Sam3Model counterpart: .*encoder\.layer\.0\.weight"):
        convert_state_dict({"encoder.layer.0.weight": torch.zeros(1)})


def test_import_command_refuses_bad_input_with_a_message(tmp_path, capsys):
    torch.save({"model": {"not_sam3.weight": torch.zeros(2)}}, tmp_path / "other.pt")
    assert main(["import-checkpoint", str(tmp_path / "other.pt"), str(tmp_path / "out")]) == 2
    assert "no Sam3Model counterpart: not_sam3.weight" in capsys.readouterr().err
    assert main(["import-checkpoint", str(tmp_path / "missing.pt"), str(tmp_path / "out")]) == 2
    assert "no checkpoint file" in capsys.readouterr().err
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")  # a folder holding what it did not write
    assert main(["import-checkpoint", str(tmp_path / "other.pt"), str(tmp_path / "taken")]) == 2
    assert "holds notes.txt, which import-checkpoint did not write" in capsys.readouterr().err
    assert (tmp_path / "taken" / "notes.txt").read_text() == "mine"
    # a partial checkpoint: the missing Sam3Model weights are listed
    save_file({"transformer.decoder.norm.weight": torch.ones(256)}, tmp_path / "part.safetensors")
    assert main(["import-checkpoint", str(tmp_path / "part.safetensors"), str(tmp_path / "out")]) == 2
    assert "does not fill a Sam3Model: missing: " in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_pickles_with_code_are_not_loaded(tmp_path):
    torch.save(
        {"model": {"x": torch.zeros(1)}, "config": collections.OrderedDict(a=object())}, tmp_path / "p.pt"
    )
    with pytest.raises(MetaCheckpointError, match="weights-only"):
        load_meta_checkpoint(tmp_path / "p.pt")
