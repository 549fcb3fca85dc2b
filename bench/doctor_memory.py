"""Check the doctor's memory meter against an independent count: the C heap in use (glibc ``mallinfo2``),
sampled after every operator of the same training step on the CPU.

    PYTHONPATH=. python bench/doctor_memory.py [--archs tiny small] [--images 1 2 4] [--threads 1]

For each architecture and batch size (images of fruits_nuts, all their queries) it runs the doctor's step
(``probe_training_step``: forward, loss, backward, clipping, AdamW step) once to warm up, then once inside
a sampling mode, and prints the meter's peak next to the sampled heap peak (both relative to the start of
the step), and the bf16-autocast activation peak against float32. Linux / glibc only.
"""

from __future__ import annotations

import argparse
import ctypes
import functools

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from sam3tune.data import DataConfig, build_train_dataset, collate
from sam3tune.doctor.step_probe import probe_training_step
from sam3tune.loss import Sam3Criterion
from sam3tune.model import ModelConfig, build_training_model, load_model
from sam3tune.train.config import OptimConfig
from sam3tune.train.param_groups import build_optimizer, role_of
from tests.data.conftest import FRUITS_NUTS


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


_libc = ctypes.CDLL("libc.so.6")
_libc.mallinfo2.restype = _MallInfo2


def heap_in_use() -> int:
    """Bytes malloc has handed out and not taken back (arena + mmap'ed chunks)."""
    info = _libc.mallinfo2()
    return info.uordblks + info.hblkhd


class HeapSampler(TorchDispatchMode):
    """Peak of the heap in use, relative to entry, sampled after every operator."""

    def __init__(self) -> None:
        super().__init__()
        self.start = heap_in_use()
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.peak = max(self.peak, heap_in_use() - self.start)
        return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--archs", nargs="+", default=["tiny", "small"])
    parser.add_argument("--images", nargs="+", type=int, default=[1, 2, 4])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    mib = 2**20
    header = f"{'arch':<6}{'images':>7}{'queries':>8}{'meter peak':>13}{'heap peak':>12}{'heap/meter':>12}"
    print(header + f"{'bf16/fp32 activations':>23}")
    for arch in args.archs:
        bundle = load_model(arch)
        dataset = build_train_dataset(
            DataConfig(root=FRUITS_NUTS, resolution=bundle.image_size), progress=False
        )
        batches = functools.partial(collate, tokenize=bundle.tokenize)
        model = build_training_model(bundle, ModelConfig(name=arch))
        for images in args.images:
            batch = batches([dataset[i] for i in range(images)])

            def step(bf16: bool, model=model, batch=batch):
                optimizer = build_optimizer(model, role_of, model.num_vit_blocks, OptimConfig())
                return probe_training_step(model, Sam3Criterion(), batch, optimizer, bf16=bf16).memory

            step(False)  # warm-up: lazily created buffers, allocator pools
            sampler = HeapSampler()
            with sampler:
                fp32 = step(False)
            meter = max(fp32.activations, fp32.optimizer_step)
            bf16 = step(True)
            sizes = f"{meter / mib:>9.2f} MiB{sampler.peak / mib:>8.2f} MiB{sampler.peak / meter:>12.3f}"
            ratio = bf16.activations / fp32.activations
            print(f"{arch:<6}{images:>7}{batch.num_queries:>8}{sizes}{ratio:>23.3f}")


if __name__ == "__main__":
    main()
