"""Peak memory (RSS) of reading and of predicting one 20,000 x 20,000 image (``sam3tune.data.regions``,
sliced prediction): each measurement in a fresh process, next to the same process doing nothing but its
imports, so the figures are what the image costs.

- ``read tiled TIFF``: every 1008 px tile of a 20,000 x 20,000 RGB tiled TIFF read by window (what
  training on tiles does), then the whole-image overview at 1008 px;
- ``predict tiled TIFF``: ``Predictor.predict`` sliced (2016 px tiles, overlap 0.2, whole-image pass,
  masks on) with the demo model, every tile read by window;
- ``read JPEG``: a 13,000 x 13,000 JPEG (Pillow's limit is 179 megapixels, so a 20,000 px JPEG is
  refused: such images must come as TIFF): decoded once as 8-bit pixels, windows cropped from it.

    nice python bench/large_image_memory.py --work /tmp/large-image   # ~2 GB of disk at most, minutes
"""

from __future__ import annotations

import argparse
import itertools
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SIDE = 20_000
JPEG_SIDE = 13_000
TILE = 1008
PREDICT_TILE = 2016  # predicting: 100 tiles of 2016 px (each resized to the model input), overlap 0.2

_MEASURE = """
import resource, sys, time
import numpy as np
mode, path = sys.argv[1], sys.argv[2]
from sam3tune.data.regions import open_regions
from sam3tune.data.tiling import tile_windows
from sam3tune.predict import Predictor
from sam3tune.demo.base import base_model_dir
from sam3tune.eval.config import PostprocessConfig, SlicingConfig
start = time.perf_counter()
detections = 0
if mode == "read":
    with open_regions(path) as reader:
        width, height = reader.size
        for window in tile_windows(width, height, {tile}, 0.2):
            reader.read(window)
        reader.overview({tile})
elif mode == "predict":
    config = PostprocessConfig(score_threshold=0.5, tiling=SlicingConfig(size={predict_tile}, overlap=0.2))
    predictor = Predictor.load(str(base_model_dir()), config=config, device="cpu")
    found = predictor.predict(path, ["circle", "square"])
    detections = sum(len(d) for d in found.values())
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, time.perf_counter() - start, detections)
"""


def scene_tile(side: int, seed: int) -> np.ndarray:
    """A flat background with a few filled circles and squares (compresses well, decodes like a photo)."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (side, side), tuple(int(v) for v in rng.integers(60, 160, 3)))
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x, y, r = (int(v) for v in (*rng.integers(0, side, 2), rng.integers(4, 20)))
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x - r, y - r, x + r, y + r), fill=fill)
    return np.asarray(image)


def measure(mode: str, path: Path) -> tuple[float, float, int]:
    """(peak RSS bytes, seconds, detections) of one fresh process."""
    code = _MEASURE.format(tile=TILE, predict_tile=PREDICT_TILE)
    done = subprocess.run(
        [sys.executable, "-c", code, mode, str(path)], capture_output=True, text=True, check=True
    )
    rss, seconds, detections = done.stdout.strip().splitlines()[-1].split()
    return float(rss), float(seconds), int(detections)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, required=True, help="folder for the test images (removed after)")
    parser.add_argument("--skip-jpeg", action="store_true")
    args = parser.parse_args()
    import tifffile
    from PIL import Image

    args.work.mkdir(parents=True, exist_ok=True)
    tiff = args.work / "scene.tif"
    clock = time.perf_counter()
    tiles = itertools.cycle([scene_tile(512, seed) for seed in range(7)])
    tifffile.imwrite(
        tiff, tiles, shape=(SIDE, SIDE, 3), dtype=np.uint8, tile=(512, 512), compression="zlib",
        compressionargs={"level": 1},
    )  # fmt: skip
    print(f"wrote {tiff} ({tiff.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - clock:.0f} s")
    pixels = SIDE * SIDE * 3
    print(
        f"an RGB {SIDE} x {SIDE} image is {pixels / 2**30:.2f} GiB as uint8, "
        f"{4 * pixels / 2**30:.2f} GiB as float32"
    )
    print("| process | peak RSS (GiB) | above imports (GiB) | seconds | detections |")
    print("|---|---:|---:|---:|---:|", flush=True)
    base = None

    def row(name: str, mode: str, path: Path) -> None:
        nonlocal base
        rss, seconds, detections = measure(mode, path)
        base = rss if base is None else base
        print(
            f"| {name} | {rss / 2**30:.2f} | {(rss - base) / 2**30:.2f} | {seconds:.0f} | {detections} |",
            flush=True,
        )

    row("nothing (imports only)", "none", tiff)
    row(f"read tiled TIFF {SIDE} x {SIDE} (every {TILE} px tile + overview)", "read", tiff)
    row(f"predict tiled TIFF {SIDE} x {SIDE} sliced ({PREDICT_TILE} px tiles, demo model)", "predict", tiff)
    if not args.skip_jpeg:
        jpeg = args.work / "scene.jpg"
        block = np.tile(scene_tile(1000, 0), (JPEG_SIDE // 1000, JPEG_SIDE // 1000, 1))
        Image.fromarray(block).save(jpeg, quality=90)
        del block
        row(f"read JPEG {JPEG_SIDE} x {JPEG_SIDE} (every {TILE} px tile + overview)", "read", jpeg)
        jpeg.unlink()
    tiff.unlink()


if __name__ == "__main__":
    main()
