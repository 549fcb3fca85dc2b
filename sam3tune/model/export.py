"""Saving and loading trained SAM 3 weights (safetensors only; every write is atomic).

* :func:`save_merged`: a plain ``transformers`` checkpoint (``config.json`` + ``model.safetensors``, LoRA
  merged in) plus the tokenizer; ``Sam3Model.from_pretrained`` and ``load_model`` read it.
* :func:`save_adapters` / :func:`load_adapters`: LoRA adapters and fully trained heads in PEFT's format
  (``adapter_config.json`` + ``adapter_model.safetensors``).
* :func:`save_state_dict` / :func:`load_state_dict`: a module's tensors in one safetensors file, for
  training checkpoints.
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from peft import PeftModel
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import Sam3Model

from sam3tune.model.finetune import quiet_peft
from sam3tune.model.quantization import dequantized_merged, is_quantized

ADAPTER_WEIGHTS = "adapter_model.safetensors"


@contextmanager
def atomic_directory(directory: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``directory`` to fill; it replaces ``directory`` only on success."""
    target = Path(directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield staging
        if target.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, retired / target.name)
            os.replace(staging, target)
            shutil.rmtree(retired)
        else:
            os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


@contextmanager
def _target(directory: str | Path, atomic: bool) -> Iterator[Path]:
    if atomic:
        with atomic_directory(directory) as staging:
            yield staging
    else:
        Path(directory).mkdir(parents=True, exist_ok=True)
        yield Path(directory)


def merged_model(sam3: Sam3Model | PeftModel) -> Sam3Model:
    """A plain float32 ``Sam3Model`` with any LoRA adapters merged in (a copy when anything had to change;
    ``sam3`` is left as it is). 4-bit base layers are dequantised, and bfloat16 frozen weights widened
    before the merge, so that small adapter updates are not rounded away."""
    if is_quantized(sam3):
        return dequantized_merged(sam3)
    if any(p.dtype != torch.float32 for p in sam3.parameters() if p.is_floating_point()):
        sam3 = copy.deepcopy(sam3).float()
    elif isinstance(sam3, PeftModel):
        sam3 = copy.deepcopy(sam3)
    return sam3.merge_and_unload() if isinstance(sam3, PeftModel) else sam3


def save_merged(model: nn.Module, directory: str | Path, *, atomic: bool = True) -> None:
    """Save a ``Sam3ForTraining`` as a plain transformers checkpoint with its tokenizer.

    ``atomic``: write to a staging directory that replaces ``directory`` at the end. Pass False to write
    into a directory the caller is already staging (e.g. a training checkpoint with more files).
    """
    with _target(directory, atomic) as target:
        merged_model(model.sam3).save_pretrained(target)
        model.tokenizer.save(target)


def save_adapters(model: nn.Module, directory: str | Path, *, atomic: bool = True) -> None:
    """Save the LoRA adapters (and fully trained heads) of a LoRA-mode ``Sam3ForTraining``, with its
    tokenizer (``atomic`` as in :func:`save_merged`)."""
    if not isinstance(model.sam3, PeftModel):
        raise ValueError("save_adapters needs a model fine-tuned with finetune.mode=lora; use save_merged")
    with _target(directory, atomic) as target:
        model.sam3.save_pretrained(target, safe_serialization=True)
        model.tokenizer.save(target)


def load_adapters(base: Sam3Model, directory: str | Path, trainable: bool = False) -> PeftModel:
    """Attach adapters saved by :func:`save_adapters` to ``base`` (the model they were trained from)."""
    weights = Path(directory) / ADAPTER_WEIGHTS
    if not weights.is_file():
        raise FileNotFoundError(f"no {ADAPTER_WEIGHTS} in {directory}: not a LoRA adapter directory")
    with quiet_peft():
        return PeftModel.from_pretrained(base, str(directory), is_trainable=trainable)


def save_state_dict(module: nn.Module, path: str | Path, trainable_only: bool = False) -> None:
    """Write ``module``'s state dict (or only its trainable parameters) to a safetensors file."""
    if trainable_only:
        tensors = {n: p for n, p in module.named_parameters() if p.requires_grad}
    else:
        tensors = module.state_dict()
    tensors = {n: t.detach().contiguous() for n, t in tensors.items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    os.close(handle)
    try:
        save_file(tensors, staging, metadata={"format": "pt"})
        os.replace(staging, path)
    finally:
        if os.path.exists(staging):
            os.remove(staging)


def load_state_dict(module: nn.Module, path: str | Path, strict: bool = True) -> list[str]:
    """Load a file written by :func:`save_state_dict` into ``module``; returns the module's keys the file
    lacked (only possible with ``strict=False``, e.g. for a ``trainable_only`` file).

    A key in the file that ``module`` does not have is always an error.
    """
    tensors = load_file(str(path), device="cpu")
    result = module.load_state_dict(tensors, strict=False)
    if result.unexpected_keys or (strict and result.missing_keys):
        raise KeyError(
            f"{path} does not fit {type(module).__name__}: unexpected keys {result.unexpected_keys[:10]}, "
            f"missing keys {result.missing_keys[:10]}"
        )
    return list(result.missing_keys)
