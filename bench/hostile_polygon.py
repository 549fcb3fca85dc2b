"""One polygon in the wrong units against the rasteriser: refused (new) or an allocation of ~24 GB (before).

Loads ``sam3tune/data/masks.py`` alone (numpy + faster-coco-eval, no torch) from this checkout, or from
the file given, and validates then rasterises annotation 1 of fruits_nuts with its coordinates scaled by
10^6 (an 800 x 600 image). Run an older copy only under an address-space cap and the machine's memory lock:

    flock /tmp/sam3tune-bigmem.lock bash -c 'ulimit -v 3000000; python bench/hostile_polygon.py OLD/masks.py'

Prints what happened and the peak resident memory.
"""

from __future__ import annotations

import argparse
import importlib.util
import resource
import time
from pathlib import Path

POLYGON = [[101e6, 118e6, 237e6, 118e6, 237e6, 285e6, 101e6, 285e6]]  # pixels x 10^6
HEIGHT, WIDTH = 600, 800


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).resolve().parents[1] / "sam3tune" / "data" / "masks.py"
    parser.add_argument(
        "masks_py", nargs="?", type=Path, default=default, help="a copy of sam3tune/data/masks.py"
    )
    args = parser.parse_args()
    spec = importlib.util.spec_from_file_location("masks_under_test", args.masks_py)
    masks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(masks)
    outline = 2 * ((237e6 - 101e6) + (285e6 - 118e6))
    print(
        f"outline {outline:.3g} px: the COCO rasteriser walks it in 1/5-px steps, two int32 per step "
        f"= {outline * 5 * 8 / 2**30:.0f} GiB before clipping"
    )
    started = time.perf_counter()
    try:
        segmentation = masks.validate_segmentation(POLYGON, HEIGHT, WIDTH)[0]
        crop = masks.decode_segmentation(segmentation, HEIGHT, WIDTH)
        print(f"rasterised: {int(crop.mask.sum())} pixels")
    except Exception as err:  # a refusal (SegmentationError) or a failed allocation (MemoryError)
        print(f"{type(err).__name__}: {str(err)[:160]}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak:.0f} MiB, {time.perf_counter() - started:.3f} s")


if __name__ == "__main__":
    main()
