"""``sam3tune predict``: every prompt on every image, written as COCO results and overlays."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from sam3tune.config import ConfigError, load_config, with_shortcuts
from sam3tune.predict.config import PredictConfig
from sam3tune.predict.predictor import Predictor, collect_images


def run_predict_command(
    images: Sequence[Path],
    config: str | None = None,
    overrides: Sequence[str] = (),
    model: str | None = None,
    prompts: Sequence[str] | None = None,
    out: Path = Path("predictions"),
) -> int:
    """Ask the prompts of the :class:`PredictConfig` from the ``config`` file, ``key=value`` overrides,
    then ``model`` / ``prompts`` (which set those keys) on ``images`` (files and folders). Writes
    ``out/predictions.json``, ``out/index.json`` and ``out/overlays/``. Exit status 0, or 2 for bad input
    (message on stderr)."""
    try:
        settings = load_config(
            PredictConfig, config, with_shortcuts(overrides, {"model": model, "prompts": prompts})
        )
        if settings.model is None or not settings.prompts:
            raise ConfigError("give a model (--model M), prompts (--prompt TEXT, repeatable) and images")
        files = collect_images(images)
        device = None if settings.device == "auto" else settings.device
        predictor = Predictor.load(settings.model, config=settings.postprocess, device=device)
        results = predictor.predict_files(files, settings.prompts, out, overlays=settings.overlays)
    except (FileNotFoundError, ValueError) as err:  # ConfigError is a ValueError
        print(f"sam3tune predict: {err}", file=sys.stderr)
        return 2
    print(f"{len(results)} detections on {len(files)} images written to {out}/predictions.json")
    return 0
