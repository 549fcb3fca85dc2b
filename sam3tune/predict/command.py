"""``sam3tune predict``: every prompt on every image, written as COCO results and overlays."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sam3tune.config import ConfigError, load_config, with_shortcuts
from sam3tune.devices import resolve_device
from sam3tune.output_files import claim_output_folder
from sam3tune.predict.config import PredictConfig
from sam3tune.predict.predictor import OUTPUTS, Predictor, collect_images


def run_predict_command(
    images: Sequence[Path],
    config: str | None = None,
    overrides: Sequence[str] = (),
    model: str | None = None,
    prompts: Sequence[str] | None = None,
    out: Path = Path("predictions"),
    overwrite: bool = False,
    boxes: Sequence[Sequence[float]] | None = None,
    negative_boxes: Sequence[Sequence[float]] | None = None,
) -> int:
    """Ask the prompts of the :class:`PredictConfig` from the ``config`` file, ``key=value`` overrides,
    then ``model`` / ``prompts`` / ``boxes`` / ``negative_boxes`` (which set those keys) on ``images``
    (files and folders). Writes ``out/predictions.json``, ``out/index.json`` and ``out/overlays/``; an
    ``out`` holding earlier results is refused before the model loads, unless ``overwrite``. Files that
    are not readable images are skipped and counted. Exit status 0; bad input raises a
    :class:`~sam3tune.errors.UserError` (status 2)."""
    shortcuts = {"model": model, "prompts": prompts, "boxes": boxes, "negative_boxes": negative_boxes}
    settings = load_config(PredictConfig, config, with_shortcuts(overrides, shortcuts))
    if settings.model is None or not (settings.prompts or settings.boxes):
        raise ConfigError(
            "give a model (--model M), prompts (--prompt TEXT, repeatable) or exemplar boxes "
            "(--box X0,Y0,X1,Y1) and images"
        )
    files = collect_images(images)
    device = resolve_device(settings.device, key="device")
    claim_output_folder(out, OUTPUTS, overwrite)
    predictor = Predictor.load(settings.model, config=settings.postprocess, device=device)
    done = predictor.predict_files(
        files,
        settings.prompts,
        out,
        overlays=settings.overlays,
        overwrite=overwrite,
        semantic=settings.semantic,
        boxes=settings.boxes,
        negative_boxes=settings.negative_boxes,
    )
    print(f"{len(done.results)} detections on {len(done.images)} images written to {out}/predictions.json")
    if done.skipped:
        print(f"{len(done.skipped)} file(s) skipped, not readable as images (listed in {out}/index.json)")
    return 0
