"""CPU evidence for semantic fine-tuning: held-out mIoU of the demo base model's semantic head, zero-shot
and after fine-tuning on synthetic label maps (docs/semantic.md).

    python scripts/semantic_demo.py [--out runs/semantic-demo] [--steps 150] [--train-images 400]
                                    [--heldout-images 100] [--threads 1] [--figure docs/semantic_demo.png]

Writes OUT/data (a semantic dataset: the demo's scenes, classes "circle", "square", "triangle" in any
colour, with hexagons and diamonds as distractors, label maps of class indices), evaluates the shipped
demo base (sam3tune/demo/base) on the held-out split, fine-tunes it with `sam3tune.train.train` (the
demo's fine-tuning overrides, the semantic criterion), evaluates the tuned model the same way, and
writes OUT/result.json, OUT/eval.md and a figure (held-out images, ground truth, zero-shot, tuned).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from sam3tune.config import load_config
from sam3tune.data.semantic import generate_semantic, load_semantic_split, read_label_map
from sam3tune.data.synth import ANY, SynthConfig
from sam3tune.demo.base import base_model_dir
from sam3tune.demo.recipe import FINETUNE
from sam3tune.demo.tasks import _SCENE, COLOURS
from sam3tune.eval.semantic_eval import evaluate_semantic_model, semantic_markdown
from sam3tune.predict import Predictor
from sam3tune.train.config import TrainConfig
from sam3tune.train.recipe import train

CLASSES = ("circle", "square", "triangle")
DISTRACTORS = ("hexagon", "diamond")
PALETTE = {0: (40, 40, 40), 1: (230, 60, 60), 2: (60, 200, 80), 3: (70, 110, 240)}


def task(train_images: int, heldout_images: int, seed: int) -> SynthConfig:
    return SynthConfig(
        categories=tuple((ANY, shape) for shape in CLASSES),
        objects=tuple((colour, shape) for shape in CLASSES for colour in COLOURS),
        distractors=tuple((colour, shape) for shape in DISTRACTORS for colour in COLOURS),
        distractor_fraction=0.3,
        splits=(("train", train_images), ("test", heldout_images)),
        seed=seed,
        placeholder_category=False,
        project="semantic-shapes",
        **_SCENE,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/semantic-demo"))
    parser.add_argument("--steps", type=int, default=150, help="optimizer steps of 16 images")
    parser.add_argument("--train-images", type=int, default=400)
    parser.add_argument("--heldout-images", type=int, default=100)
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--figure", type=Path, default=None, help="also copy the figure here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.time()
    data = args.out / "data"
    generate_semantic(task(args.train_images, args.heldout_images, args.seed), data)
    base = str(base_model_dir())
    overrides = [
        f"model.name={base}",
        *FINETUNE,
        f"data.root={data}",
        "data.val=test",
        f"output_dir={args.out}",
        "run_name=run",
        f"loop.max_steps={args.steps}",
        f"loop.epochs={math.ceil(args.steps / max(1, args.train_images // 16))}",
    ]
    config = load_config(TrainConfig, None, overrides)
    result = train(config)
    tuned = str(result.run_dir / "model")
    metrics, zero_shot, _ = evaluate_semantic_model(tuned, config.data, args.out / "eval", baseline=base)
    markdown = semantic_markdown(metrics, "tuned", zero_shot, "zero-shot", f"{data} (split test)")
    figure = draw_figure(base, tuned, data, args.out / "semantic_demo.png")
    summary = {
        "steps": result.steps,
        "seconds": round(time.time() - start, 1),
        "zero_shot": zero_shot.summary(),
        "tuned": metrics.summary(),
        "command": "python " + " ".join(sys.argv),
    }
    (args.out / "result.json").write_text(json.dumps(summary, indent=2))
    (args.out / "eval.md").write_text(markdown + "\n")
    if args.figure:
        args.figure.write_bytes(figure.read_bytes())
    print(markdown)
    print(f"{result.steps} steps, {summary['seconds']} s; figure {figure}")
    return 0


def draw_figure(base: str, tuned: str, data: Path, path: Path, count: int = 6, scale: int = 3) -> Path:
    """Columns: held-out images; rows: image, ground truth, zero-shot map, tuned map."""
    split = load_semantic_split(data, "test")
    images = split.images[:count]
    prompts = [split.prompts[c] for c in sorted(split.classes)]
    rows = [[read_label_map(i.label_path) for i in images]]
    for spec in (base, tuned):
        predictor = Predictor.load(spec, device="cpu")
        rows.append([predictor.predict_semantic(i.path, prompts) for i in images])
    side = 64 * scale
    canvas = Image.new("RGB", (count * (side + 4) + 90, 4 * (side + 4)), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for r, label in enumerate(("image", "truth", "zero-shot", "tuned")):
        draw.text((4, r * (side + 4) + side // 2), label, fill=(0, 0, 0))
    for c, image in enumerate(images):
        x = 90 + c * (side + 4)
        canvas.paste(Image.open(image.path).convert("RGB").resize((side, side), Image.NEAREST), (x, 0))
        for r, maps in enumerate(rows, start=1):
            colours = np.array([PALETTE.get(int(v), (0, 0, 0)) for v in range(256)], dtype=np.uint8)
            coloured = Image.fromarray(colours[np.clip(maps[c], 0, 255)]).resize((side, side), Image.NEAREST)
            canvas.paste(coloured, (x, r * (side + 4)))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


if __name__ == "__main__":
    sys.exit(main())
