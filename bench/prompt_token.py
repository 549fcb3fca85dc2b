"""What the geometry encoder's prompt token costs: ``model.prompt_token`` meta vs hf, side by side.

    python bench/prompt_token.py [--arch small] [--images 4] [--prompts-per-image 4] [--runs 15]
    python bench/prompt_token.py --full-size-flops [--prompts-per-image 4]

``meta`` appends the geometry encoder's CLS token (computed once per image) to every text prompt, as
Meta's SAM 3 does; ``hf`` does not, as plain ``Sam3Model.forward``. Times the training step (forward +
backward, DAC on) and the inference forward of one model in both modes, runs alternating, and prints
the medians and their ratio. ``--full-size-flops`` counts forward FLOPs of the released 840M
architecture at 1008 px instead (the part after the encoders only, ~40M random weights; nothing timed).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from sam3tune.model import ModelConfig, build_training_model, load_model
from sam3tune.model.prompt_token import set_prompt_token


def _step(model, inputs, train: bool) -> float:
    start = time.perf_counter()
    if train:
        outputs = model(*inputs)
        total = outputs["pred_logits"].sum() + outputs["pred_boxes"].sum() + outputs["pred_masks"].mean()
        total = total + sum(a["pred_logits"].sum() for a in outputs["aux_outputs"])
        total.backward()
        model.zero_grad(set_to_none=True)
    else:
        with torch.no_grad():
            model(*inputs)
    return time.perf_counter() - start


def full_size_flops(prompts_per_image: int) -> None:
    """Forward GFLOPs of the per-query part (DETR, scoring, masks) and the prompt token, full size."""
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import Sam3Config, Sam3Model

    from sam3tune.model import Sam3ForTraining
    from sam3tune.model.training_model import ImageFeatures

    with torch.device("meta"):
        sam3 = Sam3Model(Sam3Config()).eval()
    # only the parts after the encoders get real (random) weights: ~40M parameters, not 840M
    for part in (sam3.geometry_encoder, sam3.detr_encoder, sam3.detr_decoder, sam3.mask_decoder):
        part.to_empty(device="cpu")
    sam3.dot_product_scoring.to_empty(device="cpu")
    with torch.no_grad():
        for name, param in sam3.named_parameters():
            if not param.is_meta:
                param.normal_(1.0 if "norm" in name and name.endswith("weight") else 0.0, 0.02)
    model = Sam3ForTraining(sam3, tokenizer=None, one_to_many=False).eval()
    d, side, grid = 256, sam3.config.image_size, sam3.config.image_size // 14
    levels = tuple(torch.randn(1, d, s, s) for s in (4 * grid, 2 * grid, grid))
    images = ImageFeatures(levels, torch.randn(1, d, grid, grid))
    p = prompts_per_image
    image_index = torch.zeros(p, dtype=torch.long)
    text = torch.randn(p, 8, d)
    mask = torch.ones(p, 8, dtype=torch.long)
    flops = {}
    for mode in ("hf", "meta"):
        set_prompt_token(sam3, mode)
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model.decode(images, image_index, text, mask)
        flops[mode] = counter.get_total_flops() / 1e9
    extra = flops["meta"] - flops["hf"]
    print(
        f"full-size SAM 3 at {side} px, 1 image x {p} prompts of 8 tokens, eval forward after the encoders: "
        f"hf {flops['hf']:.1f} GFLOPs, meta {flops['meta']:.1f} GFLOPs (+{extra:.2f}, "
        f"+{100 * extra / flops['hf']:.2f}%); the ViT+FPN adds ~5,600 per image"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--arch", default="small")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--prompts-per-image", type=int, default=4)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--full-size-flops", action="store_true")
    args = parser.parse_args()
    if args.full_size_flops:
        full_size_flops(args.prompts_per_image)
        return
    torch.set_num_threads(args.threads)

    bundle = load_model(args.arch)
    model = build_training_model(bundle, ModelConfig(name=args.arch, prompt_token="meta"))
    size = bundle.image_size
    pixel_values = torch.randn(args.images, 3, size, size, generator=torch.Generator().manual_seed(0))
    image_index = torch.arange(args.images).repeat_interleave(args.prompts_per_image)
    input_ids, attention_mask = bundle.tokenize([f"object {i % 7}" for i in range(len(image_index))])
    inputs = (pixel_values, image_index, input_ids, attention_mask)

    print(
        f"{args.arch}: {args.images} images x {args.prompts_per_image} prompts = {len(image_index)} queries, "
        f"{size} px, {args.threads} thread(s), median of {args.runs} alternating runs"
    )
    print(f"{'step':<34}{'hf (ms)':>10}{'meta (ms)':>11}{'meta/hf':>9}")
    for label, train in (("training forward+backward (DAC on)", True), ("inference forward", False)):
        model.train(train)
        times = {"hf": [], "meta": []}
        for run in range(args.runs + 2):  # the first two of each are warm-up
            for mode in ("hf", "meta"):
                set_prompt_token(bundle.model, mode)
                elapsed = _step(model, inputs, train)
                if run >= 2:
                    times[mode].append(elapsed)
        hf, meta = (1000 * statistics.median(times[k]) for k in ("hf", "meta"))
        print(f"{label:<34}{hf:>10.1f}{meta:>11.1f}{meta / hf:>9.3f}")


if __name__ == "__main__":
    main()
