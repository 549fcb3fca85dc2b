"""Untrusted weights and model folders are read in bounded memory and refused clearly: shapes and sizes are
checked against the file and the config before anything is allocated, and every malformed folder or
checkpoint names the file and what is wrong."""

from __future__ import annotations

import hashlib
import json
import re
import resource
import shutil
import subprocess
import sys

import pytest
import torch
from PIL import Image
from transformers import Sam3Model

from sam3tune.cli import main
from sam3tune.model import ModelConfig, WeightsNotLoadedError, build_training_model, load_model
from sam3tune.model.hub import ModelSpecError
from sam3tune.model.meta_checkpoint import MetaCheckpointError, convert_state_dict, load_meta_checkpoint

VIT = "backbone.vision_backbone.trunk."


def _digest(folder):
    return {
        p.relative_to(folder): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in folder.rglob("*")
        if p.is_file()
    }


def test_an_expanded_tensor_is_refused_before_it_is_copied(tmp_path):
    """A 1.6 KB file whose tensor is a stride-0 view claiming 8 GiB: refused naming the key, inside a 3 GB
    address-space limit (before, the first copy tried to allocate 8 GiB)."""
    torch.save({"model": {VIT + "ln_pre.weight": torch.zeros(1).expand(2**31)}}, tmp_path / "evil.pt")
    assert (tmp_path / "evil.pt").stat().st_size < 4096
    code = "import sys; from sam3tune.cli import main; sys.exit(main(sys.argv[1:]))"
    done = subprocess.run(
        [sys.executable, "-c", code, "import-checkpoint", str(tmp_path / "evil.pt"), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30)),
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"{tmp_path / 'evil.pt'}: {VIT}ln_pre.weight claims [2147483648]" in done.stderr
    assert "stores 4 bytes" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("state", "message"),
    [
        (
            {VIT + "pos_embed": torch.zeros(5)},
            rf"{VIT}pos_embed: shape \[5\], expected \(1, positions, width\)",
        ),
        (
            {VIT + "blocks.0.attn.qkv.weight": torch.zeros(4, 2)},
            r"qkv\.weight: shape \[4, 2\], expected a fused",
        ),
        (
            {"backbone.language_backbone.encoder.text_projection": torch.zeros(3)},
            r"text_projection: shape \[3\], expected a matrix",
        ),
    ],
)
def test_wrongly_shaped_meta_tensors_are_named_not_a_traceback(state, message):
    with pytest.raises(MetaCheckpointError, match=message):
        convert_state_dict(state)


def test_a_checkpoint_with_non_text_keys_is_refused(tmp_path):
    torch.save({"model": {1: torch.zeros(2)}}, tmp_path / "ints.pt")
    with pytest.raises(MetaCheckpointError, match="tensor names must be text"):
        load_meta_checkpoint(tmp_path / "ints.pt")
    (tmp_path / "junk.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}......")
    assert main(["import-checkpoint", str(tmp_path / "junk.safetensors"), str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny") / "model"
    build_training_model(load_model("tiny"), ModelConfig(name="tiny")).save_pretrained(folder)
    return folder


def _copy(tiny_folder, tmp_path, name="m"):
    return shutil.copytree(tiny_folder, tmp_path / name)


def _edit_config(folder, change):
    config = json.loads((folder / "config.json").read_text())
    change(config)
    (folder / "config.json").write_text(json.dumps(config))


def _predict_fails(folder, tmp_path, capsys, fragment):
    """``predict --model folder`` exits 2 naming ``fragment``; nothing written, the folder unchanged."""
    before = _digest(folder)
    Image.new("RGB", (20, 20)).save(tmp_path / "img.png")
    out = tmp_path / "predictions"
    command = [
        "predict",
        "--model",
        str(folder),
        "--prompt",
        "a",
        str(tmp_path / "img.png"),
        "--out",
        str(out),
    ]
    assert main(command) == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err, err
    assert _digest(folder) == before
    assert not out.exists() or not any(out.iterdir())


def test_corrupt_safetensors_header_names_the_file(tiny_folder, tmp_path, capsys):
    folder = _copy(tiny_folder, tmp_path)
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[8:16] = b"\xff" * 8  # the start of the JSON header
    weights.write_bytes(bytes(data))
    _predict_fails(folder, tmp_path, capsys, f"weights file {weights} is truncated or corrupt")


def test_pickle_weights_only_are_refused_saying_why(tiny_folder, tmp_path, capsys):
    folder = _copy(tiny_folder, tmp_path)
    (folder / "model.safetensors").unlink()
    torch.save({}, folder / "pytorch_model.bin")
    _predict_fails(folder, tmp_path, capsys, f"{folder} holds pytorch_model.bin and no model.safetensors")


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (lambda c: c.update(model_type="bert"), "m/config.json: model_type 'bert', not a SAM 3 model"),
        (lambda c: c.update(vision_config="x"), "m/config.json: not a valid SAM 3 configuration"),
        (lambda c: c["detr_decoder_config"].update(num_layers=100_000), "layers in all, beyond any SAM 3"),
    ],
    ids=["other-model-type", "invalid", "absurd-layers"],
)
def test_config_json_of_another_model_or_invalid(tiny_folder, tmp_path, capsys, change, fragment):
    folder = _copy(tiny_folder, tmp_path)
    _edit_config(folder, change)
    _predict_fails(folder, tmp_path, capsys, fragment)
    with pytest.raises(ModelSpecError, match=re.escape(fragment)):
        load_model(folder)


def test_truncated_config_json_names_the_file(tiny_folder, tmp_path, capsys):
    folder = _copy(tiny_folder, tmp_path)
    text = (folder / "config.json").read_text()
    (folder / "config.json").write_text(text[: len(text) // 2])
    _predict_fails(
        folder, tmp_path, capsys, f"{folder / 'config.json'}: not readable JSON, truncated or corrupt"
    )


def test_config_that_disagrees_with_the_weights_is_refused_before_the_model_is_built(
    tiny_folder, tmp_path, monkeypatch
):
    folder = _copy(tiny_folder, tmp_path)
    _edit_config(folder, lambda c: c["detr_decoder_config"].update(num_queries=7))

    def never(*args, **kwargs):
        raise AssertionError("from_pretrained allocated a model before the shapes were checked")

    monkeypatch.setattr(Sam3Model, "from_pretrained", never)
    with pytest.raises(
        WeightsNotLoadedError, match=r"detr_decoder.query_embed.weight: stored \[6, 16\], config \[7, 16\]"
    ):
        load_model(folder)
    # a config claiming many more layers than the file holds tensors: refused before building anything
    _edit_config(folder, lambda c: c["detr_decoder_config"].update(num_queries=6, num_layers=900))
    with pytest.raises(ModelSpecError, match=r"describes .* layers but the weights hold 294 tensors"):
        load_model(folder)


def test_folders_that_are_not_a_model_say_what_they_are(tiny_folder, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_folder, run / "model")
    (run / "config.yaml").write_text("model: {}\n")
    with pytest.raises(ModelSpecError, match=f"it is a training run: its model is {run / 'model'}"):
        load_model(run)
    onnx = tmp_path / "onnx"
    onnx.mkdir()
    (onnx / "export.json").write_text("{}")
    with pytest.raises(ModelSpecError, match=r"it is an ONNX export .*need the PyTorch model"):
        load_model(onnx)
    shutil.copytree(tiny_folder, tmp_path / "sharded")
    (tmp_path / "sharded" / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": "../outside.safetensors"}})
    )
    with pytest.raises(ModelSpecError, match="names weights outside"):
        load_model(tmp_path / "sharded")


def test_a_malformed_tokenizer_file_names_the_file(tiny_folder, tmp_path):
    folder = _copy(tiny_folder, tmp_path)
    (folder / "sam3tune_tokenizer.json").write_text('["not", "a", "spec"]')
    with pytest.raises(
        ValueError, match=f"{folder / 'sam3tune_tokenizer.json'}: unknown tokenizer type 'list'"
    ):
        load_model(folder)
    (folder / "sam3tune_tokenizer.json").write_text(
        '{"type": "hashing-word", "vocab_size": -3, "max_length": 8}'
    )
    with pytest.raises(ValueError, match="vocab_size and max_length must be positive integers"):
        load_model(folder)
