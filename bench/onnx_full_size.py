"""The released architecture (``sam3-random``, 840M parameters, 1008 px) exported to ONNX and checked in
onnxruntime against torch on the CPU, with the time and peak memory of each phase.

    flock /tmp/sam3tune-fullsize.lock python bench/onnx_full_size.py --out runs/onnx-full
    python bench/onnx_full_size.py --out /tmp/onnx-tiny --model tiny      # the same steps in seconds

Phase 1, ``export``: ``export_onnx("sam3-random", OUT)`` (the dynamo exporter; graphs above 2 GB keep
their weights in ``<graph>.onnx.data``, the ONNX external-data format). Phase 2, ``check`` (a fresh
process, so phase 1's memory is gone): the torch model and the three graphs in onnxruntime on one 1008-px
image and two prompts; the largest difference of every output. Each phase prints its wall time and its
peak RSS (the process's high-water mark); ``--phase`` runs one of them alone.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch


def peak_rss_gib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    raise RuntimeError("no VmHWM in /proc/self/status")


def export(spec: str, out: Path) -> dict:
    from sam3tune.ship.onnx_export import export_onnx

    started = time.perf_counter()
    manifest = export_onnx(spec, out)
    files = {p.name: round(p.stat().st_size / 2**30, 2) for p in sorted(out.iterdir()) if p.is_file()}
    return {
        "phase": "export",
        "seconds": round(time.perf_counter() - started),
        "peak_rss_gib": round(peak_rss_gib(), 1),
        "prompt_token": manifest.prompt_token,
        "files_gib": files,
    }


def check(spec: str, out: Path) -> dict:
    from sam3tune.model import Sam3ForTraining, load_model
    from sam3tune.ship.onnx_export import OUTPUTS
    from sam3tune.ship.onnx_model import OnnxSam3

    bundle = load_model(spec)
    model = Sam3ForTraining(bundle.model, bundle.tokenize, one_to_many=False).eval()
    side = bundle.image_size
    pixel_values = torch.rand(1, 3, side, side, generator=torch.Generator().manual_seed(1)) * 2 - 1
    input_ids, attention_mask = bundle.tokenize(["red apple", "a small brown nut on a table"])
    inputs = (pixel_values, torch.zeros(2, dtype=torch.long), input_ids, attention_mask)
    started = time.perf_counter()
    with torch.no_grad():
        expected = model(*inputs)
    torch_seconds = time.perf_counter() - started
    del model, bundle
    started = time.perf_counter()
    runtime = OnnxSam3(out)
    load_seconds = time.perf_counter() - started
    started = time.perf_counter()
    got = runtime(*inputs)
    ort_seconds = time.perf_counter() - started
    return {
        "phase": "check",
        "max_abs_difference": {k: float((expected[k].float() - got[k]).abs().max()) for k in OUTPUTS},
        "output_scale": {k: float(expected[k].float().abs().max()) for k in OUTPUTS},
        "torch_forward_seconds": round(torch_seconds, 1),
        "onnxruntime_load_seconds": round(load_seconds, 1),
        "onnxruntime_forward_seconds": round(ort_seconds, 1),
        "peak_rss_gib": round(peak_rss_gib(), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="the export folder (written by phase 1)")
    parser.add_argument("--phase", choices=["export", "check"], help="one phase only (default: both)")
    parser.add_argument("--model", default="sam3-random", help="model spec (default: sam3-random)")
    args = parser.parse_args()
    if args.phase == "export":
        print(json.dumps(export(args.model, args.out)), flush=True)
    elif args.phase == "check":
        print(json.dumps(check(args.model, args.out)), flush=True)
    else:
        for phase in ("export", "check"):
            command = [
                sys.executable,
                __file__,
                "--out",
                str(args.out),
                "--phase",
                phase,
                "--model",
                args.model,
            ]
            done = subprocess.run(command)
            if done.returncode:
                sys.exit(f"phase {phase} failed (exit status {done.returncode})")


if __name__ == "__main__":
    main()
