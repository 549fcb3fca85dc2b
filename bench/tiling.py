"""Large images and small objects: whole-image resize vs sliced prediction with the same model, and
training on tiles vs on resized images (``data.tiling``, ``postprocess.tiling``; docs/eval.md).

A synthetic task from the project's generator at the demo's scale: the demo base model (64 px input) is
fine-tuned to find "star", "heart", "moon" (any colour; seen shapes as distractors) on 384 px images with
8-12 objects of 16-24 px each (a little more at aspect ratios other than 1): resized whole to 64 px they
are 3-4 px; in a 64 px tile they keep their size, the scale the base model learnt shapes at (20-40 px on
its 64 px canvas). Two models start from the same base with the same steps (300 of 8): one trained on
64 px tiles (``data.tiling.size=64``, overlap 0.375), one on the images resized whole. Each is evaluated
on held-out images (box AP50, COCO) with one resize of the whole image and with sliced prediction (the
same tiles, whole-image pass on, merged), on small objects and on a held-out set of *large* objects
(96-192 px, 1-3 per image) to check what slicing costs there. ``--train-large N`` adds N images of
large objects to the training split (a model that saw large objects too, cut into tiles). Optionally
(``--sahi-site``: a site-packages folder holding ``sahi``) the tiles of the tile-trained model are merged
with SAHI's ``greedy_nmm`` (IOS 0.5) instead of ours, side by side. Trained models in ``--out`` are
reused (``--train`` names the ones to train; ``--train-only`` evaluates nothing).

    nice python bench/tiling.py --out /tmp/tiling-bench   # ~30 min on 2 shared cores
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from sam3tune.data import DataConfig
from sam3tune.data.layout import ROBOFLOW_ANNOTATIONS as ANNOTATIONS
from sam3tune.data.synth import SynthConfig, generate
from sam3tune.demo.base import base_model_dir
from sam3tune.demo.recipe import finetune_config
from sam3tune.demo.tasks import COLOURS, DISTRACTOR_FRACTION, NEW_SHAPES, SEEN_SHAPES
from sam3tune.eval.api import evaluate_model
from sam3tune.eval.config import EvalConfig, PostprocessConfig, SlicingConfig
from sam3tune.eval.postprocess import Detections
from sam3tune.train.recipe import train

CATEGORIES = tuple(("any", shape) for shape in NEW_SHAPES)
OBJECTS = tuple((colour, shape) for shape in NEW_SHAPES for colour in COLOURS)
DISTRACTORS = tuple((colour, shape) for shape in SEEN_SHAPES for colour in COLOURS)


def task(
    size: int, objects: tuple[int, int], object_px: tuple[float, float], splits, seed: int
) -> SynthConfig:
    return SynthConfig(
        image_size=(size, size),
        categories=CATEGORIES,
        objects=OBJECTS,
        distractors=DISTRACTORS,
        distractor_fraction=DISTRACTOR_FRACTION,
        objects_per_image=objects,
        categories_per_image=(3, 3),
        object_size=(object_px[0] / size, object_px[1] / size),
        rotate=False,
        aspect_ratio=(0.8, 1.25),
        texture_strength=0.4,
        empty_fraction=0.0,
        splits=splits,
        seed=seed,
        placeholder_category=False,
        project="tiling-bench",
    )


def sahi_merge(site: str):
    """``merge_detections`` with SAHI's greedy_nmm (IOS) choosing the groups, merged as SAHI's
    GreedyNMMPostprocess does (a member joins when it still matches the merged box; union box, max score)."""
    sys.path.append(site)
    from sahi.postprocess.combine import greedy_nmm

    from sam3tune.eval.nms import box_ios_xyxy

    def merge(parts: list[Detections], config: PostprocessConfig, regions=None) -> Detections:
        scores = np.concatenate([p.scores for p in parts]).astype(np.float32)
        boxes = np.concatenate([p.boxes.reshape(-1, 4) for p in parts]).astype(np.float32)
        order = np.argsort(-scores, kind="stable")[: config.tiling.merge_pool]
        scores, boxes = scores[order], boxes[order]
        table = np.concatenate([boxes, scores[:, None], np.zeros((len(scores), 1), np.float32)], axis=1)
        groups = greedy_nmm(table, match_metric="IOS", match_threshold=config.tiling.merge_threshold)
        out_boxes, out_scores = [], []
        for keep, members in groups.items():
            box = boxes[keep].copy()
            for m in members:
                ios = box_ios_xyxy(torch.from_numpy(box[None]), torch.from_numpy(boxes[m][None]))[0, 0]
                if float(ios) >= config.tiling.merge_threshold:
                    box = np.concatenate(
                        [np.minimum(box[:2], boxes[m][:2]), np.maximum(box[2:], boxes[m][2:])]
                    )
            out_boxes.append(box)
            out_scores.append(scores[keep])
        rank = np.argsort(-np.asarray(out_scores), kind="stable")[: config.max_detections]
        return Detections(
            parts[0].image_size,
            np.asarray(out_scores, np.float32)[rank],
            np.asarray(out_boxes, np.float32).reshape(-1, 4)[rank],
        )

    return merge


def add_images(source: Path, split: Path, prefix: str) -> None:
    """Copy the images and annotations of COCO split folder ``source`` into ``split`` (same categories)."""
    into, extra = (json.loads((folder / ANNOTATIONS).read_text()) for folder in (split, source))
    assert [c["name"] for c in into["categories"]] == [c["name"] for c in extra["categories"]]
    first_image = 1 + max(image["id"] for image in into["images"])
    first_annotation = 1 + max(annotation["id"] for annotation in into["annotations"])
    image_ids = {image["id"]: first_image + k for k, image in enumerate(extra["images"])}
    for image in extra["images"]:
        name = prefix + image["file_name"]
        shutil.copy(source / image["file_name"], split / name)
        into["images"].append({**image, "id": image_ids[image["id"]], "file_name": name})
    for k, annotation in enumerate(extra["annotations"]):
        image_id = image_ids[annotation["image_id"]]
        into["annotations"].append({**annotation, "id": first_annotation + k, "image_id": image_id})
    (split / ANNOTATIONS).write_text(json.dumps(into))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--train-images", type=int, default=64)
    parser.add_argument("--heldout-images", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=384)
    parser.add_argument("--tile", type=int, default=64)
    parser.add_argument(
        "--object-px", type=float, nargs=2, default=(16.0, 24.0), help="small objects' size range"
    )
    parser.add_argument("--objects", type=int, nargs=2, default=(8, 12), help="small objects per image")
    parser.add_argument("--overlap", type=float, default=0.375)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--train", nargs="*", default=["tiles", "resized"], help="models to train (a trained one is reused)"
    )
    parser.add_argument(
        "--train-large", type=int, default=0, help="images of 1-3 large objects added to the training split"
    )
    parser.add_argument("--train-only", action="store_true", help="train, evaluate nothing")
    parser.add_argument("--sahi-site", help="site-packages folder with sahi (adds the SAHI-merge row)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    out: Path = args.out
    size = args.image_size
    data, large = out / "data", out / "large"
    splits = (("train", args.train_images), ("test", args.heldout_images))
    if not (data / "test").is_dir():
        generate(task(size, tuple(args.objects), tuple(args.object_px), splits, 1), data, False)
    if not (large / "test").is_dir():
        generate(task(size, (1, 3), (size / 4, size / 2), (("test", args.heldout_images),), 2), large, False)
    if args.train_large and not (out / "large-train").is_dir():
        generate(
            task(size, (1, 3), (size / 4, size / 2), (("train", args.train_large),), 3),
            out / "large-train",
            False,
        )
        add_images(out / "large-train" / "train", data / "train", "large_")

    base = base_model_dir()
    tiling = [f"data.tiling.size={args.tile}", f"data.tiling.overlap={args.overlap}"]
    models, seconds = {}, {}
    for name, extra in (("tiles", tiling), ("resized", [])):
        models[name] = out / name / "run" / "model"
        if name not in args.train or models[name].is_dir():
            continue
        clock = time.perf_counter()
        common = [f"loop.batch_size={args.batch}", "data.masks=false"]  # box supervision: AP50 is on boxes
        result = train(finetune_config(base, data, out / name, args.steps, [*common, *extra]))
        seconds[f"train {name}"] = time.perf_counter() - clock
        assert result.run_dir / "model" == models[name]
    if args.train_only:
        return

    sliced = SlicingConfig(size=args.tile, overlap=args.overlap, tiles_per_forward=16)
    modes = {
        "resize": PostprocessConfig(score_threshold=0.05, with_masks=False),
        "sliced": PostprocessConfig(score_threshold=0.05, with_masks=False, tiling=sliced),
    }
    rows = []
    for model_name, model in models.items():
        for mode, post in modes.items():
            row = {"model": f"trained on {model_name}", "mode": mode}
            for label, root in (("small", data), ("large", large)):
                clock = time.perf_counter()
                config = EvalConfig(batch_size=8, num_workers=0, iou_types=["bbox"], postprocess=post)
                metrics, _, _ = evaluate_model(
                    str(model),
                    DataConfig(root=root, val="test"),
                    out / "eval" / model_name / mode / label,
                    config,
                    device="cpu",
                    progress=False,
                )
                row[label] = metrics.summary()["bbox_AP50"]
                row[f"{label} s/image"] = (time.perf_counter() - clock) / args.heldout_images
            rows.append(row)
    if args.sahi_site:
        import sam3tune.eval.sliced as sliced_module

        ours = sliced_module.merge_detections
        sliced_module.merge_detections = sahi_merge(args.sahi_site)
        try:
            row = {"model": "trained on tiles", "mode": "sliced, SAHI greedy_nmm merge"}
            for label, root in (("small", data), ("large", large)):
                config = EvalConfig(
                    batch_size=8, num_workers=0, iou_types=["bbox"], postprocess=modes["sliced"]
                )
                metrics, _, _ = evaluate_model(
                    str(models["tiles"]),
                    DataConfig(root=root, val="test"),
                    out / "eval" / "sahi" / label,
                    config,
                    device="cpu",
                    progress=False,
                )
                row[label] = metrics.summary()["bbox_AP50"]
            rows.append(row)
        finally:
            sliced_module.merge_detections = ours

    lines = [
        f"held-out box AP50 (percent), {args.heldout_images} images of {size} px per set; small: "
        f"{args.objects[0]}-{args.objects[1]} objects of {args.object_px[0]:g}-{args.object_px[1]:g} px; "
        f"large: 1-3 objects of {size // 4}-{size // 2} px; tiles {args.tile} px, "
        f"overlap {args.overlap}; model input 64 px; {args.steps} fine-tuning steps of {args.batch} "
        f"(tiles or images) from the demo base, box supervision",
        "",
        "| model | prediction | small objects | large objects | s / image (small) |",
        "|---|---|---:|---:|---:|",
    ]
    for row in rows:
        timing = f"{row['small s/image']:.2f}" if "small s/image" in row else "-"
        small = f"{100 * row['small']:.1f}"
        large_ap = f"{100 * row['large']:.1f}" if "large" in row else "-"
        lines.append(f"| {row['model']} | {row['mode']} | {small} | {large_ap} | {timing} |")
    by = {(r["model"], r["mode"]): r for r in rows}
    for name in models:
        resize, cut = by[(f"trained on {name}", "resize")], by[(f"trained on {name}", "sliced")]
        ratio = cut["small"] / resize["small"] if resize["small"] > 0 else float("inf")
        lines.append(
            f"\ntrained on {name}: sliced / resize small-object AP50 = {ratio:.1f}x; "
            f"large objects {100 * resize['large']:.1f} -> {100 * cut['large']:.1f}"
        )
    lines.append("\ntraining seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()))
    report = "\n".join(lines)
    (out / "tiling.md").write_text(report + "\n")
    print(report)


if __name__ == "__main__":
    main()
