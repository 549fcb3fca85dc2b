"""The order in which a process sees the training images: a fresh permutation per epoch seeded by
(seed, epoch), split across processes, resumable at any batch."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class EpochBatchSampler(Sampler[list[int]]):
    """Batches of dataset indices for process ``rank`` of ``world_size``.

    Each epoch draws a permutation of ``range(num_samples)`` from a generator seeded with
    ``seed + epoch`` (identical on every process), keeps the first ``world_size * k`` entries so every
    process gets ``k`` samples, and gives process ``r`` the entries ``r, r + world_size, ...``. Its
    batch ``j`` is therefore a ``1 / world_size`` share of the global batch
    ``perm[j * B * W : (j + 1) * B * W]`` (B = ``batch_size``, W = ``world_size``): the union over
    processes is what one process with batch ``B * W`` would see. Incomplete batches are dropped.
    ``set_epoch(epoch, start_batch)`` selects the epoch and skips its first ``start_batch`` batches
    (resume).
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        *,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside 0..{world_size - 1}")
        per_process = num_samples // world_size
        if per_process < batch_size:
            raise ValueError(
                f"the training split has {num_samples} image(s), fewer than one batch of {batch_size} "
                f"image(s) on each of {world_size} process(es); lower loop.batch_size or add images"
            )
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.shuffle = shuffle
        self.epoch = 0
        self.start_batch = 0
        self._per_process = per_process

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Use epoch ``epoch``'s order and skip its first ``start_batch`` batches."""
        if not 0 <= start_batch <= len(self):
            raise ValueError(f"start_batch {start_batch} outside 0..{len(self)}")
        self.epoch = epoch
        self.start_batch = start_batch

    def epoch_indices(self, epoch: int) -> list[int]:
        """This process's sample indices of ``epoch``, in order (full batches only)."""
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + epoch)
            order = torch.randperm(self.num_samples, generator=generator).tolist()
        else:
            order = list(range(self.num_samples))
        mine = order[self.rank : self._per_process * self.world_size : self.world_size]
        return mine[: len(self) * self.batch_size]

    def __len__(self) -> int:
        return self._per_process // self.batch_size

    def __iter__(self) -> Iterator[list[int]]:
        indices = self.epoch_indices(self.epoch)
        for start in range(self.start_batch * self.batch_size, len(indices), self.batch_size):
            yield indices[start : start + self.batch_size]
