"""Which torch device a command runs on: ``auto`` (CUDA when available) or a device named in a config,
refused with the config key named when it is not a device or this machine does not have it, before any
model is built (instead of a torch traceback at the first ``.to(device)``)."""

from __future__ import annotations

import os

import torch

from sam3tune.config import ConfigError


def resolve_device(preference: str, local_rank: int = 0, key: str = "loop.device") -> torch.device:
    """``auto``: the local rank's CUDA device when CUDA is present, else CPU; anything else is used as
    given (``cpu``, ``cuda``, ``cuda:1``, ``mps``). A device this machine does not have raises
    :class:`~sam3tune.config.ConfigError` (a ``ValueError``) naming ``key``, before any model is built."""
    if preference == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(preference)
    except RuntimeError as err:
        raise ConfigError(f"{key}={preference!r}: not a torch device ({err})") from None
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    available = {
        "cpu": lambda: True,
        "cuda": lambda: torch.cuda.is_available() and device.index < torch.cuda.device_count(),
        "mps": lambda: torch.backends.mps.is_available(),
        "xpu": lambda: hasattr(torch, "xpu") and torch.xpu.is_available(),
    }.get(device.type, lambda: True)
    if not available():
        raise ConfigError(
            f"{key}={preference!r}: this machine has no such device (CUDA devices: "
            f"{torch.cuda.device_count() if torch.cuda.is_available() else 'none'}); use {key}=auto or cpu"
        )
    return device


def device_memory(device: torch.device) -> int:
    """Bytes of memory a run on ``device`` has: a GPU's total memory, else the machine's physical RAM
    (the CPU, and the unified memory of ``mps``)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
