"""Multi-process training under ``torchrun``: process-group set-up, device choice and the few
collectives the loop needs. A plain ``python``/``sam3tune`` launch is a world of one process."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from sam3tune.devices import resolve_device


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in the job: global ``rank``, ``local_rank`` on its node, ``world_size``
    and the ``device`` it trains on."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0 writes logs and checkpoints."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device_preference: str = "auto") -> DistributedContext:
    """Join the process group that ``torchrun`` describes in the environment (``RANK``,
    ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``), NCCL on CUDA and gloo otherwise.
    Without those variables, or when a group already exists, no new group is created."""
    if dist.is_available() and dist.is_initialized():
        rank, world_size = dist.get_rank(), dist.get_world_size()
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
    else:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_preference, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistributedContext(rank=rank, local_rank=local_rank, world_size=world_size, device=device)


def all_reduce_sum(tensor: torch.Tensor, context: DistributedContext) -> torch.Tensor:
    """The element-wise sum of ``tensor`` over all processes (``tensor`` itself on one process)."""
    if context.is_distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_object(obj: Any, context: DistributedContext) -> Any:
    """Rank 0's ``obj`` on every process."""
    if not context.is_distributed:
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def gather_objects(obj: Any, context: DistributedContext) -> list[Any]:
    """Every process's ``obj``, by rank (on every process)."""
    if not context.is_distributed:
        return [obj]
    gathered: list[Any] = [None] * context.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def barrier(context: DistributedContext) -> None:
    if context.is_distributed:
        dist.barrier()
