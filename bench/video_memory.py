"""Memory of `predict --video` over a long stream: bounded session vs transformers' session left alone.

    python bench/video_memory.py [--frames 600] [--size 1920x1080]

Streams synthetic 1080p frames (shapes drifting across a textured background, made on the fly: the video
is never on disk or in memory) through the demo-size video model (the shipped demo base as detector, a
random tracker) and prints, every 50 frames, the process's resident memory and the tensors the session
holds, for the bounded session and for one whose pruning is turned off (each in its own process). The
tracker is random, so tracks come and go; the point is what grows with the length of the video.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def frames(count: int, width: int, height: int):
    rng = np.random.default_rng(0)
    background = Image.fromarray(rng.integers(60, 200, (height // 8, width // 8, 3), dtype=np.uint8)).resize(
        (width, height)
    )
    radius = height // 6
    for t in range(count):
        image = background.copy()
        draw = ImageDraw.Draw(image)
        for k, colour in enumerate(((215, 40, 40), (40, 70, 220), (40, 170, 60))):
            x = (t * (3 + k) + k * width // 3) % (width + 2 * radius) - radius
            y = height // 4 + k * height // 4
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=colour)
        yield t, image


def rss_mib() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * 4096 / 2**20


def measure(model_dir: str, count: int, size: tuple[int, int], prune: bool) -> dict:
    import torch

    from sam3tune.video.config import VideoConfig
    from sam3tune.video.predictor import VideoPredictor

    torch.set_num_threads(1)
    predictor = VideoPredictor.load(model_dir, VideoConfig(prompt_token="hf", score_threshold=0.3))
    sessions = []
    original = predictor.new_session

    def new_session(total_frames=None):
        session = original(total_frames)
        if not prune:
            session.prune = lambda frame_idx: None
        sessions.append(session)
        return session

    predictor.new_session = new_session
    rows, peak, clock = [], 0.0, time.perf_counter()
    for frame in predictor.track(frames(count, *size), ["circle"]):
        peak = max(peak, rss_mib())
        if (frame.frame + 1) % 50 == 0:
            session = sessions[0]
            rows.append(
                {
                    "frame": frame.frame + 1,
                    "rss_mib": round(rss_mib(), 1),
                    "session_mib": round(session.tensor_bytes() / 2**20, 2),
                    "tracks": len(session.obj_ids),
                }
            )
    return {"rows": rows, "peak_rss_mib": round(peak, 1), "seconds": round(time.perf_counter() - clock, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", type=int, default=600)
    parser.add_argument("--size", default="1920x1080")
    parser.add_argument(
        "--model", help="a video model folder (default: the demo base beside a random tracker)"
    )
    parser.add_argument("--child", choices=("pruned", "full"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    if args.child:
        print(json.dumps(measure(args.model, args.frames, size, prune=args.child == "pruned")))
        return
    with tempfile.TemporaryDirectory() as scratch:
        model = args.model
        if model is None:
            from sam3tune.demo.base import base_model_dir
            from sam3tune.model.architectures import NAMED_ARCHITECTURES
            from sam3tune.ship.video_export import export_video_folder
            from sam3tune.video.model import save_random_video_model

            source = save_random_video_model(NAMED_ARCHITECTURES["demo"], Path(scratch) / "source")
            model = str(
                export_video_folder(str(base_model_dir()), Path(scratch) / "model", str(source)).folder
            )
        results = {}
        for kind in ("pruned", "full"):
            command = [
                sys.executable,
                __file__,
                "--child",
                kind,
                "--model",
                model,
                "--frames",
                str(args.frames),
            ]
            done = subprocess.run([*command, "--size", args.size], capture_output=True, text=True, check=True)
            results[kind] = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"{args.frames} frames of {args.size}, demo-size video model, one thread")
    print(
        "frame | bounded: RSS MiB, session MiB, tracks | transformers' session: RSS MiB, session MiB, tracks"
    )
    for a, b in zip(results["pruned"]["rows"], results["full"]["rows"], strict=True):
        print(
            f"{a['frame']:5d} | {a['rss_mib']:8.1f} {a['session_mib']:8.2f} {a['tracks']:3d} | "
            f"{b['rss_mib']:8.1f} {b['session_mib']:8.2f} {b['tracks']:3d}"
        )
    for kind, label in (("pruned", "bounded"), ("full", "transformers' session")):
        print(f"{label}: peak RSS {results[kind]['peak_rss_mib']} MiB, {results[kind]['seconds']} s")


if __name__ == "__main__":
    main()
