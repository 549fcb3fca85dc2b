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

import yaml

from sam3tune.data.config import DataConfig
from sam3tune.model.export import atomic_directory
from sam3tune.ship.model_card import ModelCardInputs, render_model_card

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


class HubExportError(ValueError):
    """The run cannot be exported as asked (names what is missing)."""


class NotLoggedInError(RuntimeError):
    """No Hugging Face token was found for ``--push``."""


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
    run_dir = Path(run_dir)
    config_file = run_dir / "config.yaml"
    if not config_file.is_file():
        raise HubExportError(f"{run_dir} is not a sam3tune run directory (no config.yaml)")
    config = yaml.safe_load(config_file.read_text()) or {}
    lora = (config.get("model") or {}).get("finetune", {}).get("mode") == "lora"
    if weights == "auto":
        weights = "adapters" if lora else "merged"
    source = run_dir / ("adapters" if weights == "adapters" else "model")
    needed = ADAPTER_FILES if weights == "adapters" else ("config.json", "model.safetensors")
    missing = [name for name in needed if not (source / name).is_file()]
    if missing:
        hint = " (adapters exist only for model.finetune.mode=lora runs)" if weights == "adapters" else ""
        raise HubExportError(
            f"{source} lacks {', '.join(missing)}{hint}; the run exports its weights when it completes "
            "(export: true)"
        )
    report = _find_eval_report(run_dir, eval_report)
    records = _read_records(run_dir / "metrics.jsonl")
    with atomic_directory(out) as staging:
        for path in sorted(source.iterdir()):
            if path.is_file():
                shutil.copy2(path, staging / path.name)
        _write_preprocessor_config(staging, run_dir / "model" / "config.json")
        shutil.copy2(config_file, staging / "training_config.yaml")
        if (run_dir / "loss_curve.png").is_file():
            shutil.copy2(run_dir / "loss_curve.png", staging / "loss_curve.png")
        if report is not None:
            shutil.copy2(report, staging / "eval.json")
        card = render_model_card(
            ModelCardInputs(
                run_name=run_dir.name,
                config=config,
                records=records,
                data=_data_summary(config),
                eval_report=json.loads(report.read_text()) if report is not None else None,
                weights=weights,
                has_loss_curve=(staging / "loss_curve.png").is_file(),
            )
        )
        (staging / "README.md").write_text(card)
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
        try:
            from huggingface_hub import HfApi
        except ImportError as err:
            raise ImportError("--push needs huggingface_hub: pip install huggingface_hub") from err
        api_factory = HfApi
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


def _find_eval_report(run_dir: Path, given: str | Path | None) -> Path | None:
    if given is not None:
        path = Path(given)
        if path.is_dir():
            path = path / "eval.json"
        if not path.is_file():
            raise HubExportError(f"--eval {given}: no eval.json there")
        return path
    for candidate in (run_dir / "eval" / "eval.json", run_dir.parent / "eval" / "eval.json"):
        if candidate.is_file():
            return candidate
    return None


def _read_records(path: Path) -> list[dict[str, Any]]:
    from sam3tune.train.metrics_log import read_metrics

    return read_metrics(path)


def _data_summary(config: dict[str, Any]) -> dict[str, Any] | None:
    """The inspect report of the run's dataset (None when it is not on this machine)."""
    from sam3tune.data.inspection import inspect_dataset

    data = config.get("data") or {}
    root = data.get("root")
    if root is None or not Path(root).exists():
        return None
    settings = DataConfig(
        negatives=data.get("negatives", "all"),
        max_objects_per_query=data.get("max_objects_per_query", 200),
        prompts=data.get("prompts"),
        keep_unused_categories=data.get("keep_unused_categories", False),
    )
    return inspect_dataset(root, settings, progress=False)


def _write_preprocessor_config(folder: Path, model_config: Path) -> None:
    """``preprocessor_config.json``: HF ``Sam3ImageProcessor`` settings for this model (see
    :func:`image_processor_settings`)."""
    try:
        backbone = json.loads(model_config.read_text())["vision_config"]["backbone_config"]
        size, patch = int(backbone["image_size"]), int(backbone["patch_size"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise HubExportError(f"cannot read the input size from {model_config}: {err}") from err
    processor = image_processor_settings(size, patch)
    (folder / "preprocessor_config.json").write_text(json.dumps(processor, indent=2) + "\n")


def image_processor_settings(size: int, patch: int) -> dict[str, Any]:
    """HF ``Sam3ImageProcessor`` settings for a model of input side ``size`` and patch ``patch`` (what
    sam3tune's eval transform does: bilinear resize of the whole image to S x S, scale to [0, 1], normalise
    with mean = std = 0.5; masks come out at 4x the patch grid, 288 px for SAM 3)."""
    return {
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
