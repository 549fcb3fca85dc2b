"""Time SAM 3's training step with each unique image encoded once vs once per query.

    python bench/shared_encoding.py [--arch small] [--images 4] [--prompts-per-image 4] [--runs 15]
    python bench/shared_encoding.py --full-size-flops [--prompts-per-image 4]

"repeated" is what plain ``Sam3Model.forward`` needs: one image row per query (``pixel_values[image_index]``).
"shared" encodes the I unique images once and indexes their features per query. Runs alternate between
the two, and the medians are compared side by side. ``--full-size-flops`` counts forward FLOPs of the
real 840M-parameter architecture at 1008 px instead (on the meta device: no weights, no time measured).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from sam3tune.model import ModelConfig, build_training_model, load_model


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
    """Forward GFLOPs of the real SAM 3 architecture: ViT per image, text per prompt, the rest per query."""
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import Sam3Config, Sam3Model

    from sam3tune.model.detr import run_detr_decoder, run_detr_encoder

    meta = torch.device("meta")
    with meta:
        model = Sam3Model(Sam3Config()).eval()
    d, side = model.config.detr_encoder_config.hidden_size, model.config.image_size

    def count(function) -> float:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            function()
        return counter.get_total_flops() / 1e9

    image = torch.randn(1, 3, side, side, device=meta)
    vision = count(lambda: model.vision_encoder(image))
    text = count(lambda: model.get_text_features(input_ids=torch.zeros(1, 8, dtype=torch.long, device=meta)))
    levels = [torch.randn(1, d, s, s, device=meta) for s in (4 * side // 14, 2 * side // 14, side // 14)]
    grid = (side // 14, side // 14)
    positions, prompt = torch.randn_like(levels[-1]), torch.randn(1, 8, d, device=meta)

    def per_query() -> None:
        memory = run_detr_encoder(model.detr_encoder, levels[-1], positions, prompt, None, False)
        memory_pos = positions.flatten(2).transpose(1, 2)
        decoded = run_detr_decoder(model.detr_decoder, memory, memory_pos, grid, prompt, None, True, False)
        model.detr_decoder.box_head(decoded.query_states)
        model.dot_product_scoring(decoded.query_states, prompt, None)
        model.mask_decoder(
            decoder_queries=decoded.query_states[-1],
            backbone_features=levels,
            encoder_hidden_states=memory,
            prompt_features=prompt,
        )

    rest = count(per_query)
    p = prompts_per_image
    shared, repeated = vision + p * (text + rest), p * (vision + text + rest)
    print(
        f"full-size SAM 3 at {side} px, forward GFLOPs: ViT+FPN {vision:.0f} per image, text {text:.1f} per "
        f"prompt, DETR+masks (with DAC) {rest:.0f} per query"
    )
    print(
        f"{p} prompts per image: repeated {repeated:.0f}, shared {shared:.0f}, "
        f"shared/repeated {shared / repeated:.2f}"
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
    model = build_training_model(bundle, ModelConfig(name=args.arch))
    size = bundle.image_size
    pixel_values = torch.randn(args.images, 3, size, size, generator=torch.Generator().manual_seed(0))
    image_index = torch.arange(args.images).repeat_interleave(args.prompts_per_image)
    prompts = [f"object {i % 7}" for i in range(len(image_index))]
    input_ids, attention_mask = bundle.tokenize(prompts)
    shared = (pixel_values, image_index, input_ids, attention_mask)
    repeated = (pixel_values[image_index], torch.arange(len(image_index)), input_ids, attention_mask)

    print(
        f"{args.arch}: {args.images} images x {args.prompts_per_image} prompts = {len(image_index)} queries, "
        f"{size} px, {args.threads} thread(s), median of {args.runs} alternating runs"
    )
    print(f"{'step':<34}{'repeated (ms)':>15}{'shared (ms)':>13}{'shared/repeated':>17}")
    for label, train in (("training forward+backward (DAC on)", True), ("inference forward", False)):
        model.train(train)
        times = {"repeated": [], "shared": []}
        for _ in range(2):  # warm-up
            _step(model, repeated, train)
            _step(model, shared, train)
        for _ in range(args.runs):
            times["repeated"].append(_step(model, repeated, train))
            times["shared"].append(_step(model, shared, train))
        rep, sha = (1000 * statistics.median(times[k]) for k in ("repeated", "shared"))
        print(f"{label:<34}{rep:>15.1f}{sha:>13.1f}{sha / rep:>17.2f}")


if __name__ == "__main__":
    main()
