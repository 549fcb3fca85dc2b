"""sam3tune's SAM 3 against Meta's ``sam3`` model, side by side in one run: same weights, same batch, CPU.

    python bench/meta_vs_sam3tune.py                      # reduced size (seconds per step)
    flock /tmp/sam3tune-fullsize.lock python bench/meta_vs_sam3tune.py --full-size --checkpointed-only

Meta's ``Sam3Image`` (sam3 0.1.4, built by its own builder, random weights re-drawn) and the same weights
converted into sam3tune (``convert_state_dict``, ``meta`` prompt-token mode, Meta's ViT LayerNorm eps):
two models in one process on purpose, so both see the same machine load. For ``--images`` images with
``--prompts`` prompts each (every query with targets: boxes and masks), repetitions interleaved:

* inference forward (eval mode, no gradient; their outputs are compared first, so both compute the same);
* training step: forward in training mode (DAC, dropout) + the official loss (Hungarian matching, every
  term, aux layers, one-to-many) + backward. Meta's side is its own ``forward_grounding`` with its
  matcher (``_compute_matching``) and its ``Sam3LossWrapper``; it always checkpoints activations in
  training (its DETR encoder asserts it), so sam3tune runs both with its default (no checkpointing) and
  with ``activation_checkpointing`` on;
* peak memory of each (RSS high-water mark above the RSS before the step, reset per step through
  ``/proc/self/clear_refs``, after handing freed memory back to the kernel with ``malloc_trim``);
* where the time goes: the inference forward split by stage (ViT + FPN, text, geometry encoder, DETR
  encoder, DETR decoder, scoring, mask head), timed by module hooks.

Needs Meta's ``sam3==0.1.4`` and ``open_clip_torch`` (``scripts/setup.sh --test``). The machine is
shared: read the ratios, not the absolute times.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import functools
import gc
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the Meta-reference glue is test-only code, borrowed from tests/
sys.path.insert(0, str(ROOT / "tests" / "loss"))
from official_reference import OfficialCriterion, single_process_group  # noqa: E402
from transformers import Sam3Model  # noqa: E402

from sam3tune.loss import CriterionConfig, Sam3Criterion  # noqa: E402
from sam3tune.model import ClipTokenizer, Sam3ForTraining  # noqa: E402
from sam3tune.model.meta_checkpoint import META_VIT_LAYER_NORM_EPS, convert_state_dict  # noqa: E402
from sam3tune.model.prompt_token import set_prompt_token  # noqa: E402
from tests.model.meta_sam3 import (  # noqa: E402
    Reduced,
    _Placement,
    build_meta_image_model,
    clip_bpe_file,
    import_meta_modules,
    randomize_meta_weights,
)
from tests.model.meta_sam3 import _roi_align_without_boxes as roi_align_without_boxes  # noqa: E402

PROMPTS = ("red apple", "a small brown nut", "fig", "date", "walnut", "green pear", "banana", "plum")


def rss_kib(field: str = "VmRSS") -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def release_free_memory() -> None:
    """Hand the allocator's free pages back to the kernel (glibc ``malloc_trim``), so that the RSS before
    a step is what is alive then, not the peak of the step before it."""
    ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0)


def measured(step: Callable[[], None]) -> tuple[float, float]:
    """Seconds and peak extra memory (GiB above the RSS before) of one call."""
    gc.collect()
    release_free_memory()
    Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark to the current RSS
    before = rss_kib()
    start = time.perf_counter()
    step()
    seconds = time.perf_counter() - start
    return seconds, (rss_kib("VmHWM") - before) / 2**20


class PhaseClock:
    """Adds the wall time since the last lap to ``phases[name]`` (nothing when ``phases`` is None)."""

    def __init__(self, phases: dict[str, float] | None):
        self.phases, self.last = phases, time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        if self.phases is not None:
            self.phases[name] = self.phases.get(name, 0.0) + now - self.last
        self.last = now


class StageClock:
    """Wall time per stage, from forward pre-hooks and hooks on the modules of each stage."""

    def __init__(self, stages: dict[str, list[torch.nn.Module]]):
        self.seconds = dict.fromkeys(stages, 0.0)
        self.handles = []
        for name, modules in stages.items():
            for module in modules:
                started: list[float] = []
                self.handles.append(
                    module.register_forward_pre_hook(lambda m, a, s=started: s.append(time.perf_counter()))
                )
                self.handles.append(
                    module.register_forward_hook(lambda m, a, o, s=started, n=name: self._stop(n, s))
                )

    def _stop(self, name: str, started: list[float]) -> None:
        self.seconds[name] += time.perf_counter() - started.pop()

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def build(reduced: Reduced | None, seed: int) -> tuple[torch.nn.Module, Sam3ForTraining]:
    meta = build_meta_image_model("cpu", reduced)
    randomize_meta_weights(meta, seed)
    converted, _ = convert_state_dict(meta.state_dict())
    config = reduced.hf_config() if reduced else Sam3Model.config_class()
    config.vision_config.backbone_config.layer_norm_eps = META_VIT_LAYER_NORM_EPS
    sam3 = Sam3Model(config)  # on the CPU: its non-persistent buffers (rotary tables) are computed here
    sam3.load_state_dict(converted, strict=True)  # copies: the two models share no storage
    set_prompt_token(sam3, "meta")
    tokenizer = ClipTokenizer.from_bpe_file(clip_bpe_file(), max_length=32)
    return meta, Sam3ForTraining(sam3, tokenizer)


def batch(side: int, images: int, prompts: int, seed: int) -> dict:
    """Pixels, queries and targets (2-3 boxes with masks per query, cxcywh in [0, 1])."""
    g = torch.Generator().manual_seed(seed)
    pixel_values = torch.rand(images, 3, side, side, generator=g) * 2 - 1
    image_index = torch.arange(images).repeat_interleave(prompts)
    texts = [PROMPTS[i % len(PROMPTS)] for i in range(images * prompts)]
    targets = []
    for q in range(len(texts)):
        n = 2 + q % 2
        centre = torch.rand(n, 2, generator=g) * 0.5 + 0.25
        size = torch.rand(n, 2, generator=g) * 0.2 + 0.1
        masks = torch.zeros(n, side, side, dtype=torch.bool)  # targets at the canvas resolution
        for k in range(n):
            x0, y0 = ((centre[k] - size[k] / 2) * side).long().tolist()
            x1, y1 = ((centre[k] + size[k] / 2) * side).long().tolist()
            masks[k, y0:y1, x0:x1] = True
        targets.append({"boxes": torch.cat([centre, size], 1), "masks": masks})
    return {"pixel_values": pixel_values, "image_index": image_index, "texts": texts, "targets": targets}


class MetaRunner:
    """Meta's own forward paths on a batch: ``FindStage`` with one query per (image, prompt)."""

    def __init__(self, meta, data: dict, criterion: OfficialCriterion):
        data_misc, geometry = import_meta_modules("model.data_misc", "model.geometry_encoders")
        if not hasattr(geometry.torchvision, "__version__"):  # the stand-in: Meta pools even no boxes
            geometry.torchvision.ops.roi_align = roi_align_without_boxes
        self.meta, self.data, self.criterion = meta, data, criterion
        queries = len(data["texts"])
        self.find = data_misc.FindStage(
            img_ids=data["image_index"],
            text_ids=torch.arange(queries),
            input_boxes=None,
            input_boxes_mask=None,
            input_boxes_label=None,
            input_points=None,
            input_points_mask=None,
        )
        self.targets = criterion.targets(data["targets"])
        meta.matcher = criterion.matcher  # its training forward matches every layer with this
        meta.back_convert = lambda targets: targets  # the targets are given in the matcher's layout

    def forward(self, training: bool) -> dict:
        meta, data = self.meta, self.data
        with _Placement("cpu"):
            backbone_out = meta.backbone.forward_image(data["pixel_values"])
            backbone_out.update(meta.backbone.forward_text(data["texts"], device="cpu"))
            return meta.forward_grounding(
                backbone_out=backbone_out,
                find_input=self.find,
                geometric_prompt=meta._get_dummy_prompt(len(data["texts"])),
                find_target=self.targets if training else None,
            )

    def infer(self) -> dict:
        self.meta.eval()
        with torch.inference_mode():
            return self.forward(training=False)

    def train_step(self, phases: dict[str, float] | None = None) -> None:
        self.meta.train()
        clock = PhaseClock(phases)
        out = self.forward(training=True)  # matches every layer (its matcher) inside
        clock.lap("forward")
        loss = self.criterion(out, self.targets)["core_loss"]
        clock.lap("loss")
        loss.backward()
        clock.lap("backward")
        self.meta.zero_grad(set_to_none=True)


class OursRunner:
    def __init__(self, model: Sam3ForTraining, data: dict, criterion: Sam3Criterion):
        self.model, self.data, self.criterion = model, data, criterion
        self.ids, self.mask = model.tokenizer(data["texts"])

    def inputs(self) -> tuple:
        return (self.data["pixel_values"], self.data["image_index"], self.ids, self.mask)

    def infer(self) -> dict:
        self.model.eval()
        with torch.no_grad():
            return self.model(*self.inputs())

    def train_step(self, checkpointed: bool, phases: dict[str, float] | None = None) -> None:
        self.model.train()
        self.model.activation_checkpointing = checkpointed
        clock = PhaseClock(phases)
        out = self.model(*self.inputs())
        clock.lap("forward")
        loss = self.criterion(out, self.data["targets"])["loss"]  # its matching happens here
        clock.lap("loss")
        loss.backward()
        clock.lap("backward")
        self.model.zero_grad(set_to_none=True)


def stage_modules_meta(meta) -> dict[str, list[torch.nn.Module]]:
    vision = meta.backbone.vision_backbone  # called as .forward(): hook its parts
    return {
        "ViT + FPN": [vision.trunk, *vision.convs],
        "text": [meta.backbone.language_backbone],
        "geometry (prompt token)": [meta.geometry_encoder],
        "DETR encoder": [meta.transformer.encoder],
        "DETR decoder": [meta.transformer.decoder],
        "scoring": [meta.dot_prod_scoring],
        "mask head": [meta.segmentation_head],
    }


def stage_modules_ours(model: Sam3ForTraining) -> dict[str, list[torch.nn.Module]]:
    """sam3tune runs the DETR layers' parts itself: hook the parts (their norms count as "other")."""
    core = model.core
    geometry, decoder = core.geometry_encoder, core.detr_decoder
    parts = ("self_attn", "text_cross_attn", "vision_cross_attn", "mlp")
    heads = ("box_head", "ref_point_head", "presence_head", "box_rpb_embed_x", "box_rpb_embed_y")
    return {
        "ViT + FPN": [core.vision_encoder],
        "text": [core.text_encoder, core.text_projection],
        "geometry (prompt token)": [*geometry.layers, geometry.final_proj, geometry.output_layer_norm],
        "DETR encoder": list(core.detr_encoder.layers),
        "DETR decoder": [getattr(layer, p) for layer in decoder.layers for p in parts]
        + [getattr(decoder, h) for h in heads],
        "scoring": [core.dot_product_scoring],
        "mask head": [core.mask_decoder],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--full-size", action="store_true", help="the released architecture (~10 GB)")
    parser.add_argument("--images", type=int, default=1)
    parser.add_argument("--prompts", type=int, default=2, help="prompts per image")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs of each step first")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument(
        "--checkpointed-only",
        action="store_true",
        help="training steps with activation checkpointing only (Meta's mode); at full size two models and "
        "an uncheckpointed step do not fit 24 GiB",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    reduced = None if args.full_size else Reduced()

    clock = time.perf_counter()
    meta, ours = build(reduced, seed=0)
    side = ours.image_size
    data = batch(side, args.images, args.prompts, seed=1)
    config = CriterionConfig()
    meta_run = MetaRunner(meta, data, OfficialCriterion(config, with_masks=True))
    our_run = OursRunner(ours, data, Sam3Criterion(config))
    size = "full size (840M)" if args.full_size else f"reduced ({reduced})"
    print(
        f"{size}, {side} px, {args.images} image(s) x {args.prompts} prompts, {args.threads} thread(s), "
        f"{args.repeats} interleaved repetitions; built in {time.perf_counter() - clock:.0f} s"
    )

    expected, got = meta_run.infer(), our_run.infer()
    same = {
        "logits": float((got["pred_logits"] - expected["pred_logits"][..., 0]).abs().max()),
        "boxes": float((got["pred_boxes"] - expected["pred_boxes"]).abs().max()),
        "masks": float((got["pred_masks"] - expected["pred_masks"]).abs().max()),
    }
    print(f"same computation: max |sam3tune - Meta| {same}")

    phases: dict[str, dict[str, float]] = {"Meta": {}, "sam3tune": {}, "sam3tune (ckpt)": {}}
    steps = {
        "inference forward": {"Meta": meta_run.infer, "sam3tune": our_run.infer},
        "training step (forward + loss + backward)": {
            "Meta (checkpointing, its only training mode)": lambda p=None: meta_run.train_step(p),
            "sam3tune (default: no checkpointing)": lambda p=None: our_run.train_step(False, p),
            "sam3tune (activation_checkpointing)": lambda p=None: our_run.train_step(True, p),
        },
    }
    if args.checkpointed_only:
        del steps["training step (forward + loss + backward)"]["sam3tune (default: no checkpointing)"]
        del phases["sam3tune"]
    split_of = dict(zip(steps["training step (forward + loss + backward)"], phases, strict=True))
    with single_process_group():
        for label, runs in steps.items():
            for _ in range(args.warmup):
                for run in runs.values():
                    run()
            times: dict[str, list[float]] = {name: [] for name in runs}
            peaks: dict[str, list[float]] = {name: [] for name in runs}
            for r in range(args.repeats):
                order = list(runs.items()) if r % 2 == 0 else list(reversed(runs.items()))
                for name, run in order:
                    if name in split_of:  # the timed training steps also record their phases
                        run = functools.partial(run, phases[split_of[name]])
                    seconds, peak = measured(run)
                    print(f"  ({label}, {name}: {seconds:.2f} s, {peak:.2f} GiB)", flush=True)
                    times[name].append(seconds)
                    peaks[name].append(peak)
            reference = statistics.median(next(iter(times.values())))
            print(f"\n{label}: median s, ratio to Meta, peak memory above the weights (GiB, max)")
            for name in runs:
                median = statistics.median(times[name])
                print(
                    f"  {name:<46} {median:8.2f} s  x{median / reference:5.2f}  {max(peaks[name]):6.2f} GiB"
                )

    print(
        "\nwhere the training step's time goes (seconds, mean of the timed repetitions; Meta's matching is in"
        " its forward, sam3tune's in its loss):"
    )
    print(f"  {'phase':<26}" + "".join(f"{name:>17}" for name in phases))
    for phase in phases["Meta"]:
        row = "".join(f"{phases[name][phase] / args.repeats:>17.2f}" for name in phases)
        print(f"  {phase:<26}{row}")

    print("\nwhere the inference forward's time goes (seconds, median of the repetitions):")
    split = {}
    for name, (runner, modules) in {
        "Meta": (meta_run, stage_modules_meta(meta)),
        "sam3tune": (our_run, stage_modules_ours(ours)),
    }.items():
        samples = []
        for _ in range(args.repeats):
            timer = StageClock(modules)
            start = time.perf_counter()
            runner.infer()
            total = time.perf_counter() - start
            timer.remove()
            samples.append({**timer.seconds, "other": total - sum(timer.seconds.values()), "total": total})
        split[name] = {k: statistics.median(s[k] for s in samples) for k in samples[0]}
    print(f"  {'stage':<26}{'Meta':>9}{'sam3tune':>10}")
    for stage in split["Meta"]:
        print(f"  {stage:<26}{split['Meta'][stage]:>9.2f}{split['sam3tune'][stage]:>10.2f}")


if __name__ == "__main__":
    main()
