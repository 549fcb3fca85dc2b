"""``sam3tune demo``: fine-tune the shipped base model on shapes it has never seen and show zero-shot next to
tuned on held-out images, with the real pipeline end to end.

1. ``sam3tune.data.synth`` writes the new-shapes task (``tasks.finetune_task``) in the Roboflow layout:
   ``train`` (fine-tuning images) and ``test`` (held out, never trained on).
2. ``sam3tune.train.train`` fine-tunes the base (``recipe.FINETUNE``), writing the run directory with its
   loss curve and the tuned model.
3. ``sam3tune.eval.api.evaluate_model`` evaluates the tuned model next to the base (zero-shot) on the
   held-out split: box / mask AP, cgF1, false-fire rate; ``eval.md`` and ``eval.json``.
4. ``sam3tune.predict.Predictor`` draws both models' detections on a few held-out images.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from sam3tune.config import as_overrides
from sam3tune.data import DataConfig
from sam3tune.data.synth import generate
from sam3tune.demo.base import base_model_dir
from sam3tune.demo.recipe import finetune_config
from sam3tune.demo.settings import DemoSettings
from sam3tune.demo.tasks import NEW_SHAPES, finetune_task
from sam3tune.eval.api import evaluate_model
from sam3tune.eval.config import EvalConfig, PostprocessConfig
from sam3tune.eval.evaluate import EvalMetrics
from sam3tune.output_files import WriteError, writing
from sam3tune.predict import Predictor
from sam3tune.run_dir import RunDir
from sam3tune.train.recipe import train

log = logging.getLogger(__name__)

#: Rows of the printed table: (summary key, label).
TABLE_ROWS = (
    ("bbox_AP50", "box AP50"),
    ("bbox_AP", "box AP"),
    ("segm_AP50", "mask AP50"),
    ("segm_AP", "mask AP"),
    ("bbox_cgF1", "box cgF1"),
    ("bbox_IL_MCC", "image-level MCC"),
    ("false_fire_rate", "false-fire rate"),
)
OVERLAY_SCALE = 4  # overlays are drawn on held-out images enlarged 4x (nearest), so labels are legible


@dataclass
class DemoResult:
    """What ``run_demo`` measured and wrote."""

    zero_shot: EvalMetrics
    tuned: EvalMetrics
    table: str
    report: Path  # eval.md (eval.json beside it)
    loss_curve: Path | None
    tuned_model: Path
    overlays: dict[str, Path]  # "zero-shot" / "tuned": folders of overlay PNGs; "side by side": one PNG
    seconds: dict[str, float]  # per phase


def run_demo(settings: DemoSettings, progress: bool = True) -> DemoResult:
    """Write the task, fine-tune, evaluate before/after, draw overlays (see module docstring)."""
    out = Path(settings.out)
    with writing(out, "out"):
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            message = f"--out {out} exists and is not empty (or is a file): choose another --out"
            raise WriteError(message, path=out)
        out.mkdir(parents=True, exist_ok=True)
    base = Path(settings.base) if settings.base is not None else base_model_dir()
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    data = out / "data"
    generate(
        finetune_task(settings.train_images, settings.heldout_images, seed=settings.seed), data, progress
    )
    seconds["data"] = time.perf_counter() - clock

    clock = time.perf_counter()
    config = finetune_config(base, data, out, settings.steps, as_overrides(settings.finetune))
    result = train(config)
    if result.status != "completed":
        raise KeyboardInterrupt(f"fine-tuning stopped after {result.steps} steps ({result.run_dir})")
    tuned = RunDir(result.run_dir).model_dir
    seconds["fine-tune"] = time.perf_counter() - clock

    clock = time.perf_counter()
    tuned_metrics, zero_shot_metrics, _ = evaluate_model(
        str(tuned),
        DataConfig(root=data, val="test"),
        out / "eval",
        EvalConfig(batch_size=8, num_workers=0),
        baseline=str(base),
        device="cpu",
        progress=progress,
    )
    seconds["evaluation"] = time.perf_counter() - clock

    clock = time.perf_counter()
    held_out = sorted((data / "test").glob("*.jpg"))[: settings.overlays]
    overlays = _draw_overlays({"zero-shot": base, "tuned": tuned}, held_out, out / "overlays")
    seconds["overlays"] = time.perf_counter() - clock
    return DemoResult(
        zero_shot=zero_shot_metrics,
        tuned=tuned_metrics,
        table=format_table(zero_shot_metrics, tuned_metrics),
        report=out / "eval" / "eval.md",
        loss_curve=result.loss_curve,
        tuned_model=tuned,
        overlays=overlays,
        seconds=seconds,
    )


def format_table(zero_shot: EvalMetrics, tuned: EvalMetrics) -> str:
    """The before/after table: headline metrics, then box AP50 per prompt (percentages)."""
    before, after = zero_shot.summary(), tuned.summary()
    rows = [(label, before.get(key), after.get(key)) for key, label in TABLE_ROWS]
    rows += [
        (f'box AP50 "{prompt}"', _per_prompt(zero_shot, prompt), _per_prompt(tuned, prompt))
        for prompt in NEW_SHAPES
    ]
    width = max(len(label) for label, _, _ in rows)
    lines = [f"{'held-out':<{width}}  zero-shot      tuned     change", "-" * (width + 33)]
    for label, old, new in rows:
        change = f"{100 * (new - old):+9.1f}" if old is not None and new is not None else f"{'-':>9}"
        lines.append(f"{label:<{width}}  {_pct(old):>9}  {_pct(new):>9}  {change}")
    return "\n".join(lines)


def _per_prompt(metrics: EvalMetrics, prompt: str) -> float | None:
    return metrics.coco["bbox"].per_category.get(prompt, {}).get("AP50")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _draw_overlays(models: dict[str, Path], images: list[Path], out: Path) -> dict[str, Path]:
    """Each model's detections (score >= 0.5) on ``images`` enlarged ``OVERLAY_SCALE`` times, in
    ``out/<model>/overlays/``, and all of them in one picture (a row per model), ``out/side_by_side.png``.
    Returns the folders and the picture (key ``"side by side"``)."""
    enlarged = out / "images"
    enlarged.mkdir(parents=True, exist_ok=True)
    inputs = []
    for path in images:
        with Image.open(path) as image:
            size = (image.width * OVERLAY_SCALE, image.height * OVERLAY_SCALE)
            target = enlarged / f"{path.stem}.png"
            image.convert("RGB").resize(size, Image.Resampling.NEAREST).save(target)
        inputs.append(target)
    found: dict[str, Path] = {}
    rows = []
    for name, model in models.items():
        predictor = Predictor.load(str(model), config=PostprocessConfig(score_threshold=0.5), device="cpu")
        predictor.predict_files(inputs, list(NEW_SHAPES), out / name, progress=False)
        found[name] = out / name / "overlays"
        tiles = [np.asarray(Image.open(found[name] / p.name)) for p in inputs]
        rows.append(np.concatenate(tiles, axis=1))
    found["side by side"] = out / "side_by_side.png"
    Image.fromarray(np.concatenate(rows, axis=0)).save(found["side by side"])
    return found
