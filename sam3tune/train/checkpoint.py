"""Training checkpoints written atomically: a crash at any moment leaves either the previous
checkpoint or the new one, never a mix.

A checkpoint is a directory (``RUN_DIR/checkpoints/last``, ``.../best``) holding

- ``model.safetensors``: the trainable parameters and all buffers of the model (frozen weights come
  from the model specification in ``config.yaml``, so a LoRA checkpoint stays small);
- ``training_state.pt``: optimizer state, step, epoch, data position, RNG states, counters (plain
  data, loaded with ``torch.load(weights_only=True)``);
- ``meta.json``: step, epoch and metrics, for people.

Writing goes through :func:`sam3tune.atomic.atomic_directory` (staging folder, fsync, two renames); a
crash between the two renames leaves a complete ``<name>.old``, which :func:`find_checkpoint` falls back
to.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from sam3tune.atomic import atomic_directory, complete_copy
from sam3tune.errors import UserError

MODEL_FILE = "model.safetensors"
STATE_FILE = "training_state.pt"
META_FILE = "meta.json"


class CheckpointError(UserError, RuntimeError):
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


#: what a checkpoint write raises, besides ``OSError``, when the disk is full (see ``save_checkpoint``)
WRITE_ERRORS = (SafetensorError, RuntimeError)


def save_checkpoint(
    directory: Path,
    model_state: Mapping[str, torch.Tensor],
    training_state: dict[str, Any],
    meta: dict[str, Any],
) -> None:
    """Write a checkpoint to ``directory`` atomically (see the module docstring). A failed write leaves
    the previous checkpoint there as it was; it raises what the writer raises (``OSError``, and on a full
    disk safetensors' ``SafetensorError`` or ``torch.save``'s ``RuntimeError``: :data:`WRITE_ERRORS`)."""
    with atomic_directory(directory) as staging:
        tensors = {name: t.contiguous().cpu() for name, t in model_state.items()}
        save_file(tensors, str(staging / MODEL_FILE))
        torch.save(training_state, staging / STATE_FILE)
        (staging / META_FILE).write_text(json.dumps(meta, indent=2))


def find_checkpoint(directory: Path) -> Path:
    """The complete checkpoint at ``directory``, or its ``.old`` copy left by a crash mid-swap."""
    found = complete_copy(
        directory, lambda path: all((path / name).is_file() for name in (MODEL_FILE, STATE_FILE, META_FILE))
    )
    if found is None:
        raise CheckpointError(
            f"no complete checkpoint at {directory} (expected {MODEL_FILE}, {STATE_FILE} and {META_FILE})"
        )
    return found


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
