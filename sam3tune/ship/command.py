"""``sam3tune export``: a model as ONNX graphs, or a run as a Hugging Face Hub folder (and its upload)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from sam3tune.config import ConfigError, load_config, with_shortcuts
from sam3tune.ship.config import ExportConfig
from sam3tune.ship.hub import export_hub_folder, push_folder


def run_export_command(
    source: str,
    out: Path,
    config: str | None = None,
    overrides: Sequence[str] = (),
    fmt: str | None = None,
    push: str | None = None,
    eval_report: Path | None = None,
) -> int:
    """Export ``source`` (``onnx``: a model spec such as ``RUN_DIR/model``; ``hub``: a run directory) to
    ``out`` as the :class:`ExportConfig` from the ``config`` file, ``key=value`` overrides, then ``fmt``,
    ``push`` and ``eval_report`` (shortcuts for ``format``, ``hub.push``, ``hub.eval_report``) says. Exit
    status 0 done; bad input raises a :class:`~sam3tune.errors.UserError` (status 2), ``--push`` without
    a Hugging Face login ``NotLoggedInError`` (status 3, the folder is written)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    shortcuts = {"format": fmt, "hub.push": push, "hub.eval_report": eval_report}
    settings = load_config(ExportConfig, config, with_shortcuts(overrides, shortcuts))
    if settings.format == "onnx":
        if settings.hub.push is not None or settings.hub.eval_report is not None:
            raise ConfigError("--push and --eval go with --format hub")
        _export_onnx(source, out, settings)
    elif settings.format == "hub":
        _export_hub(source, out, settings)
    else:
        raise ConfigError("say what to export: --format onnx (a model) or --format hub (a run)")
    return 0


def _export_onnx(source: str, out: Path, config: ExportConfig) -> None:
    from sam3tune.ship.onnx_export import export_onnx

    settings = config.onnx
    manifest = export_onnx(source, out, opset=settings.opset, dynamo=settings.exporter == "dynamo")
    print(
        f"ONNX export of {source} (opset {manifest.opset}, {manifest.exporter} exporter, input "
        f"{manifest.image_size} px) written to {out}/: image_encoder.onnx, text_encoder.onnx, decoder.onnx"
    )
    if settings.check:
        from sam3tune.ship.onnx_model import compare_with_torch

        difference = compare_with_torch(source, out)
        print(f"onnxruntime vs torch on a sample (3 images, 5 prompts): max |difference| {difference:.2e}")
    print(f"run it: sam3tune predict --model {out} --prompt PROMPT IMAGES...")


def _export_hub(source: str, out: Path, config: ExportConfig) -> None:
    hub = config.hub
    folder = export_hub_folder(source, out, weights=hub.weights, eval_report=hub.eval_report)
    files = ", ".join(sorted(p.name for p in folder.iterdir()))
    print(f"Hugging Face model folder written to {folder}/: {files}")
    if hub.push is None:
        print(f"set the licence in {folder}/README.md, then upload with --push REPO_ID")
        return
    url = push_folder(folder, hub.push, private=hub.private)
    print(f"uploaded to {url}")
