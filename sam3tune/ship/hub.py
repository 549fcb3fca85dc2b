"""A training run as a Hugging Face model repository folder, and its upload.

``export_hub_folder(run_dir, out)`` writes:

* the weights: merged (``config.json`` + ``model.safetensors``, what ``Sam3Model.from_pretrained``
  reads) or, for a LoRA run, the adapters (``adapter_config.json`` + ``adapter_model.safetensors``, for
  peft on top of the base model);
* the tokenizer the model was trained with and ``preprocessor_config.json`` (HF ``Sam3ImageProcessor``
  settings: square resize to the model's input size, rescale by 1/255, mean = std = 0.5);
* ``README.md``: the model card (:mod:`sam3tune.ship.model_card`), ``loss_curve.png``,
  ``training_config.yaml`` (the run's resolved config) and, when given, ``eval.json``.

``push_folder`` uploads it with ``huggingface_hub`` (token from ``HF_TOKEN`` or ``hf auth login``).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from sam3tune.errors import EXIT_NOT_FINISHED, UserError, require_package
from sam3tune.eval.report import REPORT_JSON as EVAL_REPORT
from sam3tune.json_file import read_json
from sam3tune.model.export import atomic_directory
from sam3tune.output_files import writing
from sam3tune.run_dir import RunDir
from sam3tune.ship.model_card import ModelCardInputs, render_model_card
from sam3tune.train.config import TrainConfig
from sam3tune.train.metrics_log import read_metrics

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


class HubExportError(UserError, ValueError):
    """The run cannot be exported as asked (names what is missing)."""


class NotLoggedInError(UserError, RuntimeError):
    """No Hugging Face token was found for ``--push`` (exit status 3: the folder is written)."""

    exit_status = EXIT_NOT_FINISHED


def export_hub_folder(
    run_dir: str | Path,
    out: str | Path,
    *,
    weights: Literal["auto", "merged", "adapters"] = "auto",
    eval_report: str | Path | None = None,
) -> Path:
    """Write the repository folder of the run in ``run_dir`` to ``out`` (replaced atomically).

    ``eval_report``: an ``eval.json`` of ``sam3tune eval --model RUN_DIR/model baseline=<start model>``
    (default: ``RUN_DIR/eval/eval.json`` or ``RUN_DIR/../eval/eval.json`` when present) for the card's
    evaluation table. Raises :class:`HubExportError` naming what the run lacks.
    """
    run = RunDir(run_dir)
    config = run.config()
    if weights == "auto":
        weights = "adapters" if config.model.finetune.mode == "lora" else "merged"
    source = run.adapters_dir if weights == "adapters" else run.model_dir
    needed = ADAPTER_FILES if weights == "adapters" else ("config.json", "model.safetensors")
    missing = [name for name in needed if not (source / name).is_file()]
    if missing:
        hint = " (adapters exist only for model.finetune.mode=lora runs)" if weights == "adapters" else ""
        raise HubExportError(
            f"{source} lacks {', '.join(missing)}{hint}; the run exports its weights when it completes "
            "(export: true)"
        )
    report = _find_eval_report(run, eval_report)
    inputs = ModelCardInputs(
        run_name=run.path.name,
        config=config,
        records=read_metrics(run.metrics_file),
        data=_data_summary(config),
        eval_report=read_json(report, "eval report") if report is not None else None,
        weights=weights,
        has_loss_curve=run.loss_curve.is_file(),
    )
    size, patch = _input_size(run.model_dir / "config.json")
    with writing(out, "OUT"), atomic_directory(out) as staging:
        for path in sorted(source.iterdir()):
            if path.is_file():
                shutil.copy2(path, staging / path.name)
        _write_preprocessor_config(staging, size, patch)
        shutil.copy2(run.config_file, staging / "training_config.yaml")
        if inputs.has_loss_curve:
            shutil.copy2(run.loss_curve, staging / run.loss_curve.name)
        if report is not None:
            shutil.copy2(report, staging / "eval.json")
        (staging / "README.md").write_text(render_model_card(inputs))
    return Path(out)


def push_folder(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    api_factory: Callable[[], Any] | None = None,
) -> str:
    """Upload ``folder`` to the model repository ``repo_id`` (created if needed); returns its URL.

    ``api_factory`` builds the ``huggingface_hub.HfApi``-like client (tests pass a recorder). Raises
    :class:`NotLoggedInError` when no token is available.
    """
    if api_factory is None:
        api_factory = require_package("huggingface_hub", "--push", "pip install huggingface_hub").HfApi
    api = api_factory()
    if not api.token and not _stored_token():
        raise NotLoggedInError(
            "not logged in to the Hugging Face Hub: run `hf auth login` (or `huggingface-cli login`), or "
            "set HF_TOKEN to a token with write access; the folder is ready to upload by hand: "
            f"{folder}"
        )
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    api.upload_folder(
        repo_id=repo_id,
        repo_type="model",
        folder_path=str(folder),
        commit_message="sam3tune export",
    )
    return f"https://huggingface.co/{repo_id}"


def _stored_token() -> str | None:
    """The token ``huggingface_hub`` would use (``HF_TOKEN``, then the one ``hf auth login`` saved)."""
    try:
        from huggingface_hub import get_token
    except ImportError:
        return None
    return get_token()


def _find_eval_report(run: RunDir, given: str | Path | None) -> Path | None:
    """``given`` (a file, or a folder holding ``eval.json``), else ``RUN/eval/eval.json`` or
    ``RUN/../eval/eval.json`` when present."""
    if given is not None:
        path = Path(given)
        if path.is_dir():
            path = path / EVAL_REPORT
        if not path.is_file():
            raise HubExportError(f"--eval {given}: no {EVAL_REPORT} there")
        return path
    for folder in (run.path, run.path.parent):
        candidate = folder / "eval" / EVAL_REPORT
        if candidate.is_file():
            return candidate
    return None


def _data_summary(config: TrainConfig) -> dict[str, Any] | None:
    """The inspect report of the run's dataset, read with the run's data settings (None when it is not on
    this machine)."""
    from sam3tune.data.inspection import inspect_dataset

    root = config.data.root
    if root is None or not Path(root).exists():
        return None
    return inspect_dataset(root, config.data, progress=False)


def _input_size(model_config: Path) -> tuple[int, int]:
    """The input size and patch size of the model whose ``config.json`` is ``model_config``."""
    try:
        backbone = read_json(model_config, "model config")["vision_config"]["backbone_config"]
        return int(backbone["image_size"]), int(backbone["patch_size"])
    except (KeyError, TypeError, ValueError) as err:
        raise HubExportError(f"cannot read the input size from {model_config}: {err}") from err


def _write_preprocessor_config(folder: Path, size: int, patch: int) -> None:
    """HF ``Sam3ImageProcessor`` settings for this model (what sam3tune's eval transform does: bilinear
    resize of the whole image to S x S, scale to [0, 1], normalise with mean = std = 0.5; masks come out
    at 4x the patch grid, 288 px for SAM 3)."""
    processor = {
        "image_processor_type": "Sam3ImageProcessor",
        "processor_class": "Sam3Processor",
        "do_resize": True,
        "size": {"height": size, "width": size},
        "mask_size": {"height": 4 * size // patch, "width": 4 * size // patch},
        "resample": 2,  # PIL bilinear
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "do_convert_rgb": True,
    }
    (folder / "preprocessor_config.json").write_text(json.dumps(processor, indent=2) + "\n")
