"""Images per second of the training data pipeline (load, augment, masks, collate) per worker count.

    python bench/data.py                      # fruits_nuts + a synthetic set, 0 / 2 / 4 workers, 1008 px
    python bench/data.py --workers 0 2 --resolution 504 --mask-resolution 288

Each cell times one pass over the dataset through a fresh ``DataLoader`` (worker start-up
included), after one untimed warm-up pass with 0 workers that fills the OS file cache.
Measure on an otherwise idle machine: the numbers are only comparable within one run.
"""

from __future__ import annotations

import argparse
import functools
import os
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from sam3tune.data import DataConfig, build_train_dataset, collate
from sam3tune.data.synth import SynthConfig, generate

_REPO = Path(__file__).resolve().parents[1]
FRUITS_NUTS = next(
    (
        p / "shared" / "data" / "fruits_nuts"
        for p in (_REPO, _REPO.parent, _REPO.parent.parent)
        if (p / "shared" / "data" / "fruits_nuts" / "train").is_dir()
    ),
    _REPO.parent / "shared" / "data" / "fruits_nuts",
)


def word_tokenize(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """A stand-in tokenizer (the data package never imports the model): one id per word, padded to 32."""
    ids = torch.zeros(len(texts), 32, dtype=torch.int64)
    for i, text in enumerate(texts):
        words = text.split()[:32]
        ids[i, : len(words)] = torch.tensor([hash(w) % 49000 for w in words])
    return ids, (ids != 0).to(torch.int64)


def images_per_second(dataset, workers: int, batch_size: int, passes: int) -> tuple[int, float]:
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        collate_fn=functools.partial(collate, tokenize=word_tokenize),
        generator=torch.Generator().manual_seed(0),
    )
    images = 0
    start = time.perf_counter()
    for epoch in range(passes):
        dataset.set_epoch(epoch)
        for batch in loader:
            images += batch.num_images
    return images, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--fruits-nuts", type=Path, default=FRUITS_NUTS)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2, 4])
    parser.add_argument("--resolution", type=int, default=1008)
    parser.add_argument(
        "--mask-resolution", type=int, default=None, help="default: the resolution (official)"
    )
    parser.add_argument("--batch-size", type=int, default=1, help="images per batch (official: 1)")
    parser.add_argument("--passes", type=int, default=2, help="passes over each dataset per cell")
    parser.add_argument("--synth-images", type=int, default=48)
    parser.add_argument("--synth-size", type=int, default=640, help="side of the synthetic images")
    args = parser.parse_args()

    config = DataConfig(resolution=args.resolution, mask_resolution=args.mask_resolution)
    with tempfile.TemporaryDirectory() as tmp:
        synth = SynthConfig(
            image_size=(args.synth_size, args.synth_size), splits=(("train", args.synth_images),)
        )
        generate(synth, tmp, progress=False)
        datasets = {
            "fruits_nuts (800x600 jpg)": DataConfig(
                **{**config.__dict__, "root": args.fruits_nuts.resolve()}
            ),
            f"synth ({args.synth_size}px jpg)": DataConfig(**{**config.__dict__, "root": Path(tmp)}),
        }
        print(
            f"training pipeline at {args.resolution} px, masks at {config.target_mask_resolution} px, "
            f"batch size {args.batch_size}, {os.cpu_count()} CPU cores visible, "
            f"torch threads {torch.get_num_threads()}"
        )
        print(f"{'dataset':<28} {'workers':>7} {'images':>7} {'seconds':>8} {'images/s':>9}")
        for name, data_config in datasets.items():
            dataset = build_train_dataset(data_config, seed=0, progress=False)
            images_per_second(dataset, 0, args.batch_size, 1)  # warm-up: file cache
            for workers in args.workers:
                images, seconds = images_per_second(dataset, workers, args.batch_size, args.passes)
                print(f"{name:<28} {workers:>7} {images:>7} {seconds:>8.2f} {images / seconds:>9.2f}")


if __name__ == "__main__":
    main()
