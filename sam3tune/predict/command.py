"""``sam3tune predict``: every prompt on every image, written as COCO results and overlays."""

from __future__ import annotations

import sys
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
    video: str | None = None,
) -> int:
    """Ask the prompts of the :class:`PredictConfig` from the ``config`` file, ``key=value`` overrides,
    then ``model`` / ``prompts`` / ``boxes`` / ``negative_boxes`` (which set those keys) on ``images``
    (files and folders). Writes ``out/predictions.json``, ``out/index.json`` and ``out/overlays/``; an
    ``out`` holding earlier results is refused before the model loads, unless ``overwrite``. Files that
    are not readable images, or that an exemplar box does not fit, are skipped, counted and named. Exit
    status 0; bad input raises a :class:`~sam3tune.errors.UserError` (status 2). With ``video``, the
    prompts are tracked through that video instead (:func:`run_video`)."""
    shortcuts = {"model": model, "prompts": prompts, "boxes": boxes, "negative_boxes": negative_boxes}
    settings = load_config(PredictConfig, config, with_shortcuts(overrides, shortcuts))
    if settings.model is None or not (settings.prompts or settings.boxes):
        raise ConfigError(
            "give a model (--model M), prompts (--prompt TEXT, repeatable) or exemplar boxes "
            "(--box X0,Y0,X1,Y1) and images"
        )
    if video is not None:
        if images:
            raise ConfigError(f"--video takes one video; images given too: {', '.join(map(str, images))}")
        return run_video(video, settings, out, overwrite)
    if not images:
        raise ConfigError("give images or folders to predict on (or --video PATH)")
    files = collect_images(images)
    device = resolve_device(settings.device, key="device")
    claim_output_folder(out, OUTPUTS, overwrite)
    predictor = Predictor.load(
        settings.model,
        config=settings.postprocess,
        device=device,
        max_queries=settings.max_queries_per_forward,
    )
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
        print(f"{len(done.skipped)} file(s) skipped (listed with the reason in {out}/index.json):")
        for entry in done.skipped[:5]:
            print(f"  {entry['file_name']}: {entry['reason']}")
    return 0


def run_video(video: str, settings: PredictConfig, out: Path, overwrite: bool) -> int:
    """``predict --video``: track ``settings.prompts`` through ``video`` with the video model
    ``settings.model`` into ``out`` (docs/video.md)."""
    from sam3tune.video.predictor import OUTPUTS as VIDEO_OUTPUTS
    from sam3tune.video.predictor import VideoPredictor

    if settings.boxes or settings.negative_boxes or settings.semantic:
        raise ConfigError("--video tracks text prompts; --box, --neg-box and semantic=true are for images")
    config = settings.video
    reader = config.open(video)  # bad input is refused before the model loads
    claim_output_folder(out, VIDEO_OUTPUTS, overwrite)
    device = resolve_device(settings.device, key="device")
    predictor = VideoPredictor.load(settings.model, config, device=str(device))
    found = settings.postprocess if config.detections else None
    done = predictor.predict_video(reader, settings.prompts, out, overwrite=True, detections=found)
    rate = done.frames / done.seconds if done.seconds > 0 else float("nan")
    print(
        f"{done.tracks} tracks, {done.detections} masks on {done.frames} frames ({rate:.1f} frames/s) "
        f"written to {out}/tracks.json, frames.jsonl" + (", overlay.mp4" if config.overlay else "")
    )
    if not done.complete:
        print(f"stopped early: {reader.error}", file=sys.stderr)
    return 0
