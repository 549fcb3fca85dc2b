"""Is the point-sampled mask loss worth it for memory? The mask terms' peak (forward + backward, the
doctor's meter) at SAM 3's shapes: predicted 288 x 288 logits, 1008 x 1008 targets, dense (the official
loss, chunked) vs ``num_sample_points`` = 112 x 112 points per mask.

    python bench/mask_loss_memory.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from sam3tune.doctor.memory import LiveTensorMeter
from sam3tune.loss.mask_loss import mask_pair_losses


def peak_bytes(pairs: int, points: int | None) -> int:
    generator = torch.Generator().manual_seed(0)
    pred = torch.randn(pairs, 288, 288, generator=generator).requires_grad_()
    target = torch.rand(pairs, 1008, 1008, generator=generator) > 0.7
    meter = LiveTensorMeter()
    with meter:
        focal, dice = mask_pair_losses(pred, target, num_points=points)
        (focal.sum() + dice.sum()).backward()
    return meter.peak


def main() -> None:
    print("matched masks | dense MiB | 12,544 points MiB")
    for pairs in (6, 24):
        dense, sampled = peak_bytes(pairs, None), peak_bytes(pairs, 112 * 112)
        print(f"{pairs:>13} | {dense / 2**20:9.1f} | {sampled / 2**20:17.1f}")


if __name__ == "__main__":
    main()
