"""Saving and loading trained SAM 3 weights (safetensors only; every write is atomic).

* :func:`save_merged`: a plain ``transformers`` checkpoint (``config.json`` + ``model.safetensors``, LoRA
  merged in) plus the tokenizer and a ``README.md`` with the plain-transformers snippet
  (:mod:`sam3tune.model.plain_transformers`); ``Sam3Model.from_pretrained`` and ``load_model`` read it.
* :func:`save_adapters` / :func:`load_adapters`: LoRA adapters and fully trained heads in PEFT's format
  (``adapter_config.json`` + ``adapter_model.safetensors``).

Directories are written with :func:`sam3tune.atomic.atomic_directory` (staging folder, fsync, rename).
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from peft import PeftModel
from torch import nn
from transformers import Sam3Model

from sam3tune.atomic import atomic_directory
from sam3tune.model.finetune import quiet_peft
from sam3tune.model.hub import ModelSpecError
from sam3tune.model.plain_transformers import usage_markdown
from sam3tune.model.prompt_token import set_prompt_token
from sam3tune.model.quantization import dequantized_merged, is_quantized

ADAPTER_WEIGHTS = "adapter_model.safetensors"
#: what ``save_pretrained`` of a Sam3Model writes (one weights file, or shards and their index)
MODEL_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "model-*-of-*.safetensors",
    "model.safetensors.index.json",
)
MODEL_README = "README.md"


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


def save_merged(model: nn.Module, directory: str | Path) -> None:
    """Save a ``Sam3ForTraining`` as a plain transformers checkpoint with its tokenizer (atomically); its
    ``config.json`` records the prompt-token mode (``sam3tune.model.prompt_token``) and ``README.md``
    says how to get sam3tune's predictions from it with plain transformers."""
    merged = merged_model(model.sam3)
    set_prompt_token(merged, model.prompt_token)  # the folder records how the model ran (meta or hf)
    with atomic_directory(directory) as target:
        merged.save_pretrained(target)
        model.tokenizer.save(target)
        (target / MODEL_README).write_text(_model_readme(model.prompt_token))


def _model_readme(prompt_token: str) -> str:
    lines = [
        "# SAM 3, saved by sam3tune",
        "",
        "A `Sam3Model` checkpoint (`config.json`, `model.safetensors`) with its tokenizer. sam3tune runs it "
        "with `--model path/to/this/folder`.",
        "",
        *usage_markdown("path/to/this/folder", prompt_token),
    ]
    return "\n".join(lines)


def save_adapters(model: nn.Module, directory: str | Path) -> None:
    """Save the LoRA adapters (and fully trained heads) of a LoRA-mode ``Sam3ForTraining``, with its
    tokenizer (atomically)."""
    if not isinstance(model.sam3, PeftModel):
        raise ValueError("save_adapters needs a model fine-tuned with finetune.mode=lora; use save_merged")
    with atomic_directory(directory) as target:
        model.sam3.save_pretrained(target, safe_serialization=True)
        model.tokenizer.save(target)


def load_adapters(base: Sam3Model, directory: str | Path, trainable: bool = False) -> PeftModel:
    """Attach adapters saved by :func:`save_adapters` to ``base`` (the model they were trained from)."""
    weights = Path(directory) / ADAPTER_WEIGHTS
    if not weights.is_file():
        raise ModelSpecError(f"no {ADAPTER_WEIGHTS} in {directory}: not a LoRA adapter directory")
    with quiet_peft():
        return PeftModel.from_pretrained(base, str(directory), is_trainable=trainable)
