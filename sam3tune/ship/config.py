"""``sam3tune export`` settings (``--config FILE`` and ``key=value`` overrides)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal


@dataclass
class OnnxExportConfig:
    """``--format onnx``: three graphs (see :mod:`sam3tune.ship.onnx_export`)."""

    opset: int = 18
    # torch.onnx's dynamo-based exporter (needs onnxscript) or the older TorchScript tracer
    exporter: Literal["dynamo", "torchscript"] = "dynamo"
    check: bool = True  # run the graphs in onnxruntime on a sample and compare with torch (needs onnxruntime)


@dataclass
class HubExportConfig:
    """``--format hub``: a Hugging Face model repository folder (see :mod:`sam3tune.ship.hub`)."""

    # merged: config.json + model.safetensors (LoRA merged in); adapters: adapter_config.json +
    # adapter_model.safetensors (LoRA runs only; load on top of the base model); auto: adapters for a
    # LoRA run, merged otherwise
    weights: Literal["auto", "merged", "adapters"] = "auto"
    # eval.json of `sam3tune eval --model RUN_DIR/model baseline=<start model>` for the card's evaluation
    # (default: RUN_DIR/eval/eval.json or RUN_DIR/../eval/eval.json when present)
    eval_report: Path | None = None
    push: str | None = None  # upload the folder to this model repository (REPO_ID)
    private: bool = False  # create that repository as private


@dataclass
class VideoExportConfig:
    """``--format video``: the tuned detector in a SAM 3 video model (``sam3tune.ship.video_export``)."""

    # the tracker source: a folder or hub id of a SAM 3 video model (facebook/sam3); default: the run's
    # starting model (model.name of its config.yaml), or the model itself
    tracker: str | None = None


@dataclass
class ExportConfig:
    """``sam3tune export``: ``format`` says what is written from the source."""

    # onnx: graphs of a model; hub: a run's repository folder; video: a Sam3VideoModel folder (tuned detector)
    format: Literal["onnx", "hub", "video"] | None = None
    onnx: OnnxExportConfig = field(default_factory=OnnxExportConfig)
    hub: HubExportConfig = field(default_factory=HubExportConfig)
    video: VideoExportConfig = field(default_factory=VideoExportConfig)
