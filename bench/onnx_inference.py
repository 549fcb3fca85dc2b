"""CPU inference time of the demo model: torch (``Sam3ForTraining`` eval forward) vs its ONNX export in
onnxruntime (the three graphs chained), on the same inputs, alternating, median of the repeats.

    python bench/onnx_inference.py                      # 1 thread; 1 and 8 images x 3 prompts
    python bench/onnx_inference.py --threads 2 --repeats 50 --model runs/x/model

Prints one row per batch shape: median ms per call for each runtime and the ratio torch / onnxruntime
(> 1: onnxruntime is faster), plus the largest output difference.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sam3tune.demo.base import base_model_dir
from sam3tune.model import Sam3ForTraining, load_model
from sam3tune.ship.onnx_export import OUTPUTS, export_onnx
from sam3tune.ship.onnx_model import OnnxSam3

PROMPTS = ["star", "heart", "moon"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=None, help="model spec (default: the demo's shipped base)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for both runtimes (default 1)")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--images", type=int, nargs="+", default=[1, 8], help="images per call")
    args = parser.parse_args()
    spec = args.model or str(base_model_dir())
    torch.set_num_threads(args.threads)

    bundle = load_model(spec)
    model = Sam3ForTraining(bundle.model, bundle.tokenize, one_to_many=False).eval()
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        export_onnx(spec, Path(tmp) / "onnx")
        export_seconds = time.perf_counter() - started
        runtime = OnnxSam3(Path(tmp) / "onnx", threads=args.threads)
        print(
            f"model {spec}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, "
            f"{bundle.image_size} px; export {export_seconds:.1f} s; torch {torch.__version__}, "
            f"{args.threads} thread(s), median of {args.repeats}"
        )
        header = ("images x prompts", "torch ms", "onnxruntime ms", "torch / ort")
        print("  ".join(f"{h:>{w}}" for h, w in zip(header, (16, 9, 14, 11), strict=True)) + "  max |diff|")
        for images in args.images:
            size = bundle.image_size
            pixel_values = (
                torch.rand(images, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
            )
            image_index = torch.arange(images).repeat_interleave(len(PROMPTS))
            input_ids, attention_mask = bundle.tokenize(PROMPTS * images)
            inputs = (pixel_values, image_index, input_ids, attention_mask)
            with torch.no_grad():
                expected = model(*inputs)
            got = runtime(*inputs)
            difference = max(float((expected[k] - got[k]).abs().max()) for k in OUTPUTS)
            times: dict[str, list[float]] = {"torch": [], "ort": []}
            for _ in range(3):  # warm-up
                with torch.no_grad():
                    model(*inputs)
                runtime(*inputs)
            for _ in range(args.repeats):
                started = time.perf_counter()
                with torch.no_grad():
                    model(*inputs)
                times["torch"].append(time.perf_counter() - started)
                started = time.perf_counter()
                runtime(*inputs)
                times["ort"].append(time.perf_counter() - started)
            t, o = statistics.median(times["torch"]) * 1e3, statistics.median(times["ort"]) * 1e3
            label = f"{images} x {len(PROMPTS)}"
            print(f"{label:>16}  {t:9.2f}  {o:14.2f}  {t / o:11.2f}  {difference:.1e}")


if __name__ == "__main__":
    main()
