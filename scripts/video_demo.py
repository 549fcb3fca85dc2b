"""The video demo: the demo's tuned detector on synthetic videos of its concepts, against zero-shot.

    python scripts/video_demo.py --out runs/video-demo [--tuned sam3tune-demo/run/model] [--videos 6]

1. Synthetic videos (``sam3tune.demo.tasks.video_task``): "star", "heart", "moon" (any colour) and seen
   shapes as distractors, 2-4 objects per clip moving across 64 px frames for 30-60 frames, passing in
   front of each other, some appearing or vanishing mid-clip; YouTube-VIS ground truth.
2. The tuned model: ``--tuned`` (a ``sam3tune demo`` run's ``run/model``), else ``sam3tune demo`` is run
   first (about 5 minutes on 2 cores) into ``OUT/demo``.
3. A tracker source shaped like ``facebook/sam3`` for the demo architecture, with **random** weights (no
   trained tracker of this size exists), and both detectors exported beside it: ``sam3tune export
   --format video``.
4. ``sam3tune eval`` of the tuned video model next to the zero-shot one on the videos: per-frame detection
   AP (the detector on every frame: what fine-tuning changes), video mask AP and HOTA. With a random
   tracker the tracking figures (video AP, HOTA, AssA) are not meaningful; with ``facebook/sam3`` the
   tracker is the released one.
5. ``sam3tune predict --video`` of the tuned model on the first clip (mp4): tracks and ``overlay.mp4``.
   transformers' hot-start rules remove every track of a random tracker (its masks never match a
   detection), so this run turns them off (``video.tracker.hotstart_delay=0``) to show the outputs.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from sam3tune.cli import main as sam3tune
from sam3tune.data.synth_video import generate_videos
from sam3tune.demo.base import base_model_dir
from sam3tune.demo.tasks import ARCHITECTURE, NEW_SHAPES, video_task
from sam3tune.model.architectures import NAMED_ARCHITECTURES
from sam3tune.video.model import save_random_video_model

ROWS = (
    ("frame_bbox_AP50", "per-frame box AP50"),
    ("frame_bbox_AP", "per-frame box AP"),
    ("frame_segm_AP50", "per-frame mask AP50"),
    ("frame_bbox_cgF1", "per-frame box cgF1"),
    ("video_AP50", "video mask AP50 (random tracker)"),
    ("HOTA", "HOTA (random tracker)"),
    ("DetA", "DetA (random tracker)"),
    ("AssA", "AssA (random tracker)"),
)


def run(command: list[str]) -> None:
    print("$ sam3tune " + " ".join(command), flush=True)
    code = sam3tune(command)
    if code != 0:
        raise SystemExit(f"sam3tune {command[0]} failed with exit status {code}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tuned", type=Path, help="a sam3tune demo run's run/model (default: run the demo)")
    parser.add_argument("--videos", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--prompt-token",
        choices=("meta", "hf"),
        help="video.prompt_token for both models (default: what each detector records, hf for the demo's; "
        "give hf for a demo run made before models recorded their mode)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    clock = time.perf_counter()

    videos = out / "videos"
    truth = generate_videos(video_task(args.videos), videos, progress=False)
    frames = sum(v["length"] for v in truth["videos"])
    print(f"{len(truth['videos'])} videos, {frames} frames, {len(truth['annotations'])} object tracks")

    tuned = args.tuned
    if tuned is None:
        run(["demo", "--out", str(out / "demo"), "--threads", str(args.threads)])
        tuned = out / "demo" / "run" / "model"

    source = save_random_video_model(NAMED_ARCHITECTURES[ARCHITECTURE], out / "tracker-source", seed=0)
    for name, detector in (("zero-shot", base_model_dir()), ("tuned", tuned)):
        run(
            [
                "export",
                "--format",
                "video",
                str(detector),
                str(out / f"{name}-video"),
                f"video.tracker={source}",
            ]
        )

    token = [f"video.prompt_token={args.prompt_token}"] if args.prompt_token else []
    run(
        [
            "eval",
            *token,
            "--model",
            str(out / "tuned-video"),
            "--data",
            str(videos / "annotations.json"),
            f"baseline={out / 'zero-shot-video'}",
            "--out",
            str(out / "eval"),
            "--overwrite",
            "video.detections=true",
            "postprocess.score_threshold=0",
        ]
    )
    first = videos / "videos" / "video000.mp4"
    clip = str(first) if first.is_file() else str(videos / "JPEGImages" / "video000")
    prompts = [word for shape in NEW_SHAPES for word in ("--prompt", shape)]
    run(
        [
            "predict",
            "--video",
            clip,
            "--model",
            str(out / "tuned-video"),
            *prompts,
            "--out",
            str(out / "predict"),
            "--overwrite",
            "video.tracker.hotstart_delay=0",
            *token,
        ]
    )

    report = json.loads((out / "eval" / "eval.json").read_text())
    before, after = report["baseline"]["summary"], report["model"]["summary"]
    print(f"\n{len(truth['videos'])} synthetic videos, {frames} frames (percent) | zero-shot | tuned")
    for key, label in ROWS:
        old, new = before.get(key), after.get(key)
        show = [f"{100 * v:.1f}" if v is not None else "-" for v in (old, new)]
        print(f"{label} | {show[0]} | {show[1]}")
    print(f"overlay: {out / 'predict' / 'overlay.mp4'}; report: {out / 'eval' / 'eval.md'}")
    print(f"{(time.perf_counter() - clock) / 60:.1f} min")


if __name__ == "__main__":
    main()
