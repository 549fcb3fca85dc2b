"""Frozen base weights in less memory: bfloat16 storage, and 4-bit NormalFloat (NF4) Linear layers through
bitsandbytes for QLoRA (``ModelConfig.frozen_dtype``, ``ModelConfig.quantization``).

bitsandbytes is optional (``pip install sam3tune[qlora]``): only ``quantization=nf4`` and the 8-bit AdamW
import it. Its CPU backend (0.50) runs NF4 Linear layers and 8-bit AdamW too, in plain PyTorch, so QLoRA
trains on the CPU test models as well.
"""

from __future__ import annotations

import copy
from types import ModuleType

import torch
from peft import PeftModel, prepare_model_for_kbit_training
from peft.tuners.lora import LoraLayer
from torch import nn
from transformers import Sam3Model

from sam3tune.errors import require_package
from sam3tune.model.finetune import HEAD_MODULES

QLORA_EXTRA = "pip install 'sam3tune[qlora]'  (bitsandbytes)"
_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d, nn.RMSNorm)


def require_bitsandbytes(what: str) -> ModuleType:
    """Import bitsandbytes, or raise ``MissingPackageError`` (an ``ImportError``) saying that ``what``
    needs it and how to install it."""
    return require_package("bitsandbytes", what, QLORA_EXTRA)


def quantize_frozen_linears(model: Sam3Model, *, train_heads: bool, compute_dtype: torch.dtype) -> int:
    """Replace the Linear layers of ``model`` by NF4 ``bitsandbytes.nn.Linear4bit`` layers (frozen,
    double-quantised statistics, ``compute_dtype`` matmuls) and prepare it with peft's
    ``prepare_model_for_kbit_training`` (everything frozen, other weights in float32). The heads stay
    full precision when they train (``train_heads``). Returns how many layers were quantised.

    Call before adding LoRA adapters: they then wrap the 4-bit layers (QLoRA)."""
    bnb = require_bitsandbytes("model.quantization=nf4")
    skip = tuple(f"detr_decoder.{m}" for m in HEAD_MODULES) + tuple(HEAD_MODULES) if train_heads else ()
    count = 0
    for parent_name, parent in list(model.named_modules()):
        if isinstance(parent, nn.MultiheadAttention):  # reads its out_proj weight directly
            continue
        for name, child in list(parent.named_children()):
            path = f"{parent_name}.{name}" if parent_name else name
            if type(child) is not nn.Linear or path.startswith(skip):
                continue
            device = child.weight.device
            layer = bnb.nn.Linear4bit(
                child.in_features,
                child.out_features,
                bias=child.bias is not None,
                compute_dtype=compute_dtype,
                quant_type="nf4",
                compress_statistics=True,
                device="cpu",
            )
            layer.weight = bnb.nn.Params4bit(
                child.weight.data.float().cpu(),
                requires_grad=False,
                quant_type="nf4",
                compress_statistics=True,
            )
            if child.bias is not None:
                layer.bias = nn.Parameter(child.bias.data.float().cpu(), requires_grad=False)
            # bitsandbytes' CPU inference path repacks the weight in place on the first no-grad forward (and
            # fails on layers narrower than a block): training alternates with evaluation, so keep one format
            layer.support_avx512bf16_for_cpu = False
            setattr(parent, name, layer.to(device))  # moving a Params4bit quantises it
            count += 1
    prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return count


def cast_frozen(model: nn.Module, dtype: torch.dtype) -> int:
    """Store every frozen floating-point parameter of ``model`` in ``dtype``, except those of normalisation
    layers (small, and kept in float32 as peft's k-bit preparation does); returns how many were cast.
    Quantised (integer) weights are left alone."""
    norm_params = {id(p) for m in model.modules() if isinstance(m, _NORMS) for p in m.parameters()}
    count = 0
    for param in model.parameters():
        frozen = not param.requires_grad and param.is_floating_point() and id(param) not in norm_params
        if frozen and param.dtype != dtype:
            param.data = param.data.to(dtype)
            count += 1
    return count


def is_quantized(model: nn.Module) -> bool:
    """Whether ``model`` holds bitsandbytes 4-bit layers."""
    return any(type(m).__name__ == "Linear4bit" for m in model.modules())


def dequantized_merged(sam3: Sam3Model | PeftModel) -> Sam3Model:
    """A plain float32 ``Sam3Model`` from a (possibly LoRA-wrapped) model with 4-bit layers: each adapted
    layer becomes ``dequantised base + LoRA delta`` (merged before any re-quantisation), every other 4-bit
    layer its dequantised weight. ``sam3`` is left as it is."""
    bnb = require_bitsandbytes("exporting a model.quantization=nf4 model")
    copied = copy.deepcopy(sam3)
    for parent in list(copied.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, LoraLayer) and type(child.base_layer).__name__ == "Linear4bit":
                linear = _dequantized(bnb, child.base_layer)
                for adapter in child.active_adapters:
                    linear.weight.data += child.get_delta_weight(adapter).float().to(linear.weight.device)
                setattr(parent, name, linear)
    if isinstance(copied, PeftModel):
        copied = copied.merge_and_unload()
    for parent in list(copied.modules()):
        for name, child in list(parent.named_children()):
            if type(child).__name__ == "Linear4bit":
                setattr(parent, name, _dequantized(bnb, child))
    return copied.float()


def _dequantized(bnb: ModuleType, layer: nn.Module) -> nn.Linear:
    weight = bnb.functional.dequantize_4bit(layer.weight.data, layer.weight.quant_state).float()
    linear = nn.Linear(
        layer.in_features, layer.out_features, bias=layer.bias is not None, device=weight.device
    )
    linear.weight.data.copy_(weight)
    if layer.bias is not None:
        linear.bias.data.copy_(layer.bias.data.float())
    return linear
