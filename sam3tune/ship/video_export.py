"""A tuned detector inside a SAM 3 video model: ``sam3tune export --format video RUN_OR_MODEL OUT``.

``OUT`` is a folder that plain ``transformers.Sam3VideoModel.from_pretrained(OUT)`` loads with no missing or
unexpected keys:

* ``config.json``: a ``sam3_video`` config whose ``detector_config`` is the tuned model's and whose
  ``tracker_config`` and video settings (thresholds, hot-start, memory) are the tracker source's;
* ``model.safetensors``: ``detector_model.*`` from the tuned model (LoRA merged: a run's ``model/``),
  ``tracker_model.*`` and ``tracker_neck.*`` from the tracker source, unchanged (float32);
* the tokenizer the detector was trained with (Meta's prompt ids for SAM 3's CLIP vocabulary), the processor
  files (``processor_config.json`` in transformers 5's nested layout, ``preprocessor_config.json``) and
  ``sam3tune_video.json`` (the detector and tracker sources). The detector's config keeps the prompt-token
  mode it was trained in (``sam3tune_prompt_token``), which ``predict --video`` follows.

The tracker source is ``video.tracker``, by default the run's starting model (``model.name`` of its
config, read through ``RunDir``), or the model itself when ``RUN_OR_MODEL`` is a model: ``facebook/sam3`` is
a video model and holds the released tracker. A source without tracker weights (an image ``Sam3Model``, the
small named architectures) is refused with what to do. Every key is checked against the video model's own
state dict (built on the meta device, no weights allocated) before anything is written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import Sam3VideoModel

from sam3tune.atomic import atomic_directory
from sam3tune.model.export import MODEL_FILES
from sam3tune.model.loading import load_model
from sam3tune.model.tokenizer import TOKENIZER_FILES
from sam3tune.output_files import claim_whole_folder, writing
from sam3tune.run_dir import RunDir
from sam3tune.ship.hub import image_processor_settings
from sam3tune.video.model import (
    MANIFEST_FILE,
    TRACKER_PREFIXES,
    VideoModelError,
    detector_prompt_token,
    load_tracker,
    read_tracker_source,
    video_config,
)


@dataclass
class VideoExport:
    """What :func:`export_video_folder` wrote: the folder, the detector and tracker sources, key counts."""

    folder: Path
    detector: str
    tracker: str
    prompt_token: str
    detector_keys: int
    tracker_keys: int


def export_video_folder(
    source: str | Path, out: str | Path, tracker: str | None = None, overwrite: bool = False
) -> VideoExport:
    """Write the video model of ``source`` (a run directory, or a model folder / hub id) to ``out``
    (replaced atomically); ``tracker``: the tracker source (default: see the module docstring). ``out`` is
    claimed before any model loads (:func:`~sam3tune.output_files.claim_whole_folder`): new or empty, or,
    with ``overwrite``, an earlier video export holding nothing else."""
    outputs = (*MODEL_FILES, *TOKENIZER_FILES, "processor_config.json", "preprocessor_config.json")
    claim_whole_folder(out, (*outputs, MANIFEST_FILE), overwrite, "OUT", "a video export")
    detector_spec, start_model = _detector_of(Path(source), str(source))
    tracker_spec = tracker or start_model
    try:
        tracker_source = read_tracker_source(tracker_spec)
    except VideoModelError as err:
        if tracker is None and start_model != str(source):
            raise VideoModelError(f"the run {source} started from {start_model}, which {err}") from err
        raise
    tracker_model = load_tracker(tracker_source)
    bundle = load_model(detector_spec)
    prompt_token = detector_prompt_token(bundle.model.config)
    config = video_config(bundle.model.config, tracker_source.config)
    with torch.device("meta"):
        model = Sam3VideoModel(config)  # a skeleton: its three parts are replaced below
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    model.detector_model = bundle.model
    model.tracker_model, model.tracker_neck = tracker_model.tracker_model, tracker_model.tracker_neck
    del tracker_model  # its detector (the source's) is not needed
    tensors = model.state_dict()
    _check_keys(expected, tensors, detector_spec, tracker_spec)
    with writing(out, "OUT"), atomic_directory(out) as staging:
        model.save_pretrained(staging)
        bundle.tokenize.save(staging)
        _write_processor_files(staging, config)
        manifest = {
            "detector": str(detector_spec),
            "tracker": str(tracker_spec),
            "transformers_class": "Sam3VideoModel",
        }
        (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    tracker_keys = sum(key.startswith(TRACKER_PREFIXES) for key in tensors)
    return VideoExport(
        folder=Path(out),
        detector=str(detector_spec),
        tracker=str(tracker_spec),
        prompt_token=prompt_token,
        detector_keys=len(tensors) - tracker_keys,
        tracker_keys=tracker_keys,
    )


def _detector_of(path: Path, source: str) -> tuple[str, str]:
    """(detector model spec, default tracker source) of a run directory or a model."""
    run = RunDir(path)
    if path.is_dir() and run.is_run():
        if not (run.model_dir / "config.json").is_file():
            raise VideoModelError(
                f"{run.model_dir} holds no model: the run exports its tuned weights there when it completes"
            )
        return str(run.model_dir), run.config().model.name
    return source, source


def _check_keys(
    expected: dict[str, tuple[int, ...]], tensors: dict[str, torch.Tensor], detector: str, tracker: str
) -> None:
    """Every key of the video model (``expected``: key -> shape) present with its shape, nothing else;
    else name the differences."""
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = sorted(
        f"{key} {tuple(tensors[key].shape)} (expected {expected[key]})"
        for key in set(expected) & set(tensors)
        if tuple(tensors[key].shape) != expected[key]
    )
    if missing or unexpected or wrong:
        parts = [
            f"{label} {len(keys)}: {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
            if keys
        ]
        raise VideoModelError(
            f"the detector of {detector} and the tracker of {tracker} do not make a SAM 3 video model: "
            + "; ".join(parts)
        )


def _write_processor_files(folder: Path, config) -> None:
    """``processor_config.json`` (``Sam3VideoProcessor`` with its image and video processors nested, as
    transformers 5 writes it) and ``preprocessor_config.json`` (the image processor alone)."""
    detector = config.detector_config
    size, patch = int(detector.image_size), int(detector.vision_config.backbone_config.patch_size)
    image = image_processor_settings(size, patch)
    video = {
        "video_processor_type": "Sam2VideoVideoProcessor",
        **{
            k: v
            for k, v in image.items()
            if k not in ("image_processor_type", "processor_class", "mask_size")
        },
    }
    processor = {
        "processor_class": "Sam3VideoProcessor",
        "target_size": size,
        "image_processor": image,
        "video_processor": video,
    }
    (folder / "processor_config.json").write_text(json.dumps(processor, indent=2) + "\n", encoding="utf-8")
    (folder / "preprocessor_config.json").write_text(json.dumps(image, indent=2) + "\n", encoding="utf-8")
