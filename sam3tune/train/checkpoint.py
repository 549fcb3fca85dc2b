"""Training checkpoints written atomically: a crash at any moment leaves either the previous
checkpoint or the new one, never a mix.

A checkpoint is a directory (``RUN_DIR/checkpoints/last``, ``.../best``) holding

- ``model.safetensors``: the trainable parameters and all buffers of the model (frozen weights come
  from the model specification in ``config.yaml``, so a LoRA checkpoint stays small);
- ``training_state.pt``: optimizer state, step, epoch, data position, RNG states, counters (plain
  data, loaded with ``torch.load(weights_only=True)``);
- ``meta.json``: step, epoch and metrics, for people.

Writing goes to ``<name>.tmp`` (every file fsync'ed), then the old ``<name>`` is renamed to
``<name>.old``, ``<name>.tmp`` to ``<name>``, the directory is fsync'ed and ``<name>.old`` removed.
A crash between the two renames leaves a complete ``<name>.old``, which :func:`find_checkpoint`
falls back to.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

MODEL_FILE = "model.safetensors"
STATE_FILE = "training_state.pt"
META_FILE = "meta.json"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, incomplete or does not fit the model."""


def model_state_to_save(model: nn.Module) -> dict[str, torch.Tensor]:
    """The trainable parameters and all buffers of ``model``, by state-dict name."""
    trainable = {name for name, param in model.named_parameters() if param.requires_grad}
    buffers = {name for name, _ in model.named_buffers()}
    return {
        name: tensor.detach()
        for name, tensor in model.state_dict(keep_vars=True).items()
        if name in trainable or name in buffers
    }


def load_model_state(model: nn.Module, state: Mapping[str, torch.Tensor], where: Path) -> None:
    """Copy a saved state into ``model``: every saved tensor must exist in the model with the same
    shape, and every trainable parameter of the model must be in the checkpoint."""
    own = model.state_dict()
    unknown = sorted(set(state) - set(own))
    missing = sorted(
        name for name, param in model.named_parameters() if param.requires_grad and name not in state
    )
    if unknown or missing:
        raise CheckpointError(
            f"checkpoint {where} does not fit the model: {len(unknown)} unknown tensor(s) "
            f"{unknown[:5]}, {len(missing)} trainable parameter(s) missing {missing[:5]} "
            "(was it written with another model or fine-tuning mode?)"
        )
    for name, tensor in state.items():
        if own[name].shape != tensor.shape:
            raise CheckpointError(
                f"checkpoint {where}: {name} has shape {tuple(tensor.shape)}, the model "
                f"expects {tuple(own[name].shape)}"
            )
    model.load_state_dict(dict(state), strict=False)


def save_checkpoint(
    directory: Path,
    model_state: Mapping[str, torch.Tensor],
    training_state: dict[str, Any],
    meta: dict[str, Any],
) -> None:
    """Write a checkpoint to ``directory`` atomically (see the module docstring)."""
    directory = Path(directory)
    parent = directory.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.with_name(directory.name + ".tmp")
    old = directory.with_name(directory.name + ".old")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_file({name: t.contiguous().cpu() for name, t in model_state.items()}, str(tmp / MODEL_FILE))
    _fsync_file(tmp / MODEL_FILE)
    with open(tmp / STATE_FILE, "wb") as handle:
        torch.save(training_state, handle)
        _flush_and_sync(handle)
    with open(tmp / META_FILE, "w") as handle:
        json.dump(meta, handle, indent=2)
        _flush_and_sync(handle)
    _fsync_dir(tmp)
    if directory.exists():
        if old.exists():
            shutil.rmtree(old)
        os.rename(directory, old)
    os.rename(tmp, directory)
    _fsync_dir(parent)
    if old.exists():
        shutil.rmtree(old)


def find_checkpoint(directory: Path) -> Path:
    """The complete checkpoint at ``directory``, or its ``.old`` copy left by a crash mid-swap."""
    directory = Path(directory)
    for candidate in (directory, directory.with_name(directory.name + ".old")):
        if all((candidate / name).is_file() for name in (MODEL_FILE, STATE_FILE, META_FILE)):
            return candidate
    raise CheckpointError(
        f"no complete checkpoint at {directory} (expected {MODEL_FILE}, {STATE_FILE} and {META_FILE})"
    )


def load_checkpoint(directory: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """``(model_state, training_state, meta)`` of the checkpoint at ``directory`` (or its ``.old``); a
    truncated or corrupt file raises :class:`CheckpointError` naming it."""
    found = find_checkpoint(directory)
    readers = {
        MODEL_FILE: lambda path: load_file(str(path)),
        STATE_FILE: lambda path: torch.load(path, map_location="cpu", weights_only=True),
        META_FILE: lambda path: json.loads(path.read_text()),
    }
    parts = []
    for name, read in readers.items():
        try:
            parts.append(read(found / name))
        except Exception as err:
            raise CheckpointError(
                f"checkpoint file {found / name} is truncated or corrupt ({type(err).__name__}: {err})"
            ) from err
    model_state, training_state, meta = parts
    return model_state, training_state, meta


def _flush_and_sync(handle) -> None:
    handle.flush()
    os.fsync(handle.fileno())


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
