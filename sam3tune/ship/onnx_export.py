"""Export a (merged) SAM 3 as three ONNX graphs for text-prompted inference.

* ``image_encoder.onnx``: ``pixel_values`` (I, 3, S, S) -> ``level_0 .. level_{n-1}`` (the FPN levels
  SAM 3 uses, finest first, (I, d, h_k, w_k)) and ``positions`` (I, d, h, w) of the coarsest;
* ``text_encoder.onnx``: ``input_ids``, ``attention_mask`` (B, L) int64 -> ``text_features`` (B, L, d);
* ``decoder.onnx``: the image features, ``image_index`` (B,) int64 (the image row of each query),
  ``text_features`` and ``attention_mask`` -> ``pred_logits`` (B, Q), ``pred_boxes`` (B, Q, 4) cxcywh
  in [0, 1], ``presence_logits`` (B, 1), ``pred_masks`` (B, Q, h_0, w_0) mask logits.

I (images), B (queries) and L (prompt tokens) are dynamic; S is the model's fixed input size. Three
graphs rather than one because SAM 3's cost is lopsided: at full size the image encoder is ~5.6
TFLOPs per image, the decoder ~0.44 per query and the text encoder ~5 GFLOPs per prompt, so a
deployment encodes each image once and each prompt once (cacheable) and runs only the decoder per
(image, prompt). :class:`~sam3tune.ship.onnx_model.OnnxSam3` chains them like ``Sam3ForTraining``'s
eval forward. ``export.json`` records the opset, input size, level count and the exporter used.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from sam3tune.errors import require_package
from sam3tune.json_file import JsonFileError, read_json
from sam3tune.model import Sam3ForTraining, load_model
from sam3tune.model.export import atomic_directory
from sam3tune.model.hub import ModelSpecError
from sam3tune.model.training_model import ImageFeatures

log = logging.getLogger(__name__)

OPSET = 18
NUM_LEVELS = 3  # SAM 3's FPN has 4 levels (4x, 2x, 1x, 0.5x the patch grid); the 0.5x one is unused
MANIFEST = "export.json"
GRAPHS = ("image_encoder", "text_encoder", "decoder")
OUTPUTS = ("pred_logits", "pred_boxes", "presence_logits", "pred_masks")


@dataclass
class OnnxManifest:
    """``export.json``: what a runner needs to know about the graphs beside it."""

    format: str  # "sam3tune-onnx"
    version: int
    opset: int
    image_size: int
    num_levels: int
    num_queries: int
    text_max_length: int  # the tokenizer's limit (CLIP context: 32 for SAM 3)
    source: str  # the model spec that was exported
    exporter: str  # "dynamo" or "torchscript"
    torch: str

    @classmethod
    def read(cls, directory: str | Path) -> OnnxManifest:
        path = Path(directory) / MANIFEST
        try:
            data = read_json(path, "ONNX manifest")
        except JsonFileError as err:
            raise ModelSpecError(
                f"{directory} is not a sam3tune ONNX export (cannot read {path}: {err})"
            ) from err
        kind = data.get("format") if isinstance(data, dict) else data
        if kind != "sam3tune-onnx":
            raise ModelSpecError(f"{path}: not a sam3tune ONNX manifest (format {kind!r:.60})")
        missing = [k for k in cls.__dataclass_fields__ if k not in data]
        if missing:
            raise ModelSpecError(f"{path}: the ONNX manifest lacks {', '.join(missing)}")
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})


class _ImageEncoder(nn.Module):
    def __init__(self, model: Sam3ForTraining):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: Tensor) -> tuple[Tensor, ...]:
        features = self.model.encode_images(pixel_values)
        return (*features.levels, features.positions)


class _TextEncoder(nn.Module):
    def __init__(self, model: Sam3ForTraining):
        super().__init__()
        self.model = model

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.model.encode_text(input_ids, attention_mask)


class _Decoder(nn.Module):
    def __init__(self, model: Sam3ForTraining):
        super().__init__()
        self.model = model

    def forward(
        self,
        level_0: Tensor,
        level_1: Tensor,
        level_2: Tensor,
        positions: Tensor,
        image_index: Tensor,
        text_features: Tensor,
        attention_mask: Tensor,
    ) -> tuple[Tensor, ...]:
        images = ImageFeatures((level_0, level_1, level_2), positions)
        outputs = self.model.decode(images, image_index, text_features, attention_mask)
        return tuple(outputs[k] for k in OUTPUTS)


def export_onnx(
    spec: str | Path, out_dir: str | Path, *, opset: int = OPSET, dynamo: bool = True
) -> OnnxManifest:
    """Write the three graphs of model ``spec`` (a ``save_pretrained`` directory such as ``RUN_DIR/model``,
    a hub id or a named architecture), its tokenizer and ``export.json`` into ``out_dir`` (atomically).

    ``dynamo``: torch's dynamo-based exporter (default; needs ``onnxscript``), else the TorchScript one.
    Weights stay float32. Graphs over 2 GB (full-size SAM 3) keep their weights in ``<graph>.onnx.data``.
    """
    require_package("onnxscript" if dynamo else "onnx", "ONNX export", "pip install 'sam3tune[onnx]'")
    bundle = load_model(spec)
    model = Sam3ForTraining(bundle.model, bundle.tokenize, one_to_many=False).eval()
    size = bundle.image_size
    pixel_values = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    input_ids, attention_mask = bundle.tokenize(["a prompt of some words", "two words", "three"])
    image_index = torch.tensor([0, 1, 1])
    with torch.no_grad():
        features = model.encode_images(pixel_values)
        text = model.encode_text(input_ids, attention_mask)
    levels = len(features.levels)
    if levels != NUM_LEVELS:
        raise ValueError(f"{spec}: the image encoder gives {levels} FPN levels, the decoder graph takes 3")
    level_names = [f"level_{k}" for k in range(levels)]
    manifest = OnnxManifest(
        format="sam3tune-onnx",
        version=1,
        opset=opset,
        image_size=size,
        num_levels=levels,
        num_queries=model.num_queries,
        text_max_length=bundle.tokenize.max_length,
        source=str(spec),
        exporter="dynamo" if dynamo else "torchscript",
        torch=torch.__version__,
    )
    images, queries, tokens = "images", "queries", "tokens"
    jobs = {
        "image_encoder": (
            _ImageEncoder(model),
            (pixel_values,),
            ["pixel_values"],
            [*level_names, "positions"],
            {"pixel_values": {0: images}, **{n: {0: images} for n in [*level_names, "positions"]}},
        ),
        "text_encoder": (
            _TextEncoder(model),
            (input_ids, attention_mask),
            ["input_ids", "attention_mask"],
            ["text_features"],
            {
                "input_ids": {0: queries, 1: tokens},
                "attention_mask": {0: queries, 1: tokens},
                "text_features": {0: queries, 1: tokens},
            },
        ),
        "decoder": (
            _Decoder(model),
            (*features.levels, features.positions, image_index, text, attention_mask),
            [*level_names, "positions", "image_index", "text_features", "attention_mask"],
            list(OUTPUTS),
            {
                **{n: {0: images} for n in [*level_names, "positions"]},
                "image_index": {0: queries},
                "text_features": {0: queries, 1: tokens},
                "attention_mask": {0: queries, 1: tokens},
                **{n: {0: queries} for n in OUTPUTS},
            },
        ),
    }
    with atomic_directory(out_dir) as staging:
        for name, (module, args, inputs, outputs, axes) in jobs.items():
            started = time.perf_counter()
            _export_graph(module, args, staging / f"{name}.onnx", inputs, outputs, axes, opset, dynamo)
            log.info("exported %s in %.1f s", name, time.perf_counter() - started)
        bundle.tokenize.save(staging)
        (staging / MANIFEST).write_text(json.dumps(asdict(manifest), indent=2) + "\n")
    return manifest


def _export_graph(
    module: nn.Module,
    args: tuple[Tensor, ...],
    path: Path,
    input_names: list[str],
    output_names: list[str],
    dynamic_axes: dict[str, dict[int, str]],
    opset: int,
    dynamo: bool,
) -> None:
    module.eval()
    with torch.no_grad(), warnings.catch_warnings(), _quiet_exporter_logs():
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=FutureWarning)  # torch.export internals (pytree)
        if dynamo:
            dims = {
                name: {axis: torch.export.Dim.DYNAMIC for axis in axes} for name, axes in dynamic_axes.items()
            }
            program = torch.onnx.export(
                module,
                args,
                dynamo=True,
                input_names=input_names,
                output_names=output_names,
                dynamic_shapes=_positional(dims, input_names),
                opset_version=opset,
                external_data=False,
                verbose=False,
            )
            program.save(str(path), external_data=_too_big(module))
        else:
            torch.onnx.export(
                module,
                args,
                str(path),
                dynamo=False,
                input_names=input_names,
                output_names=output_names,
                dynamic_axes=dynamic_axes,
                opset_version=opset,
            )


def _positional(dims: dict[str, dict[int, object]], input_names: list[str]) -> tuple:
    """Dynamic shapes for the exporter, one entry per positional input (None: static)."""
    return tuple(dims.get(name) for name in input_names)


def _too_big(module: nn.Module) -> bool:
    """Whether the weights pass protobuf's 2 GB limit (then they go to an external data file)."""
    return sum(p.numel() * p.element_size() for p in module.parameters()) > 1_800_000_000


@contextmanager
def _quiet_exporter_logs() -> Iterator[None]:
    """The exporter logs every initializer it deduplicates (INFO) and the torchvision ops it cannot
    register (WARNING; sam3tune never uses torchvision): keep them out of the user's console."""
    names = ("onnx_ir", "onnxscript", "torch.onnx")
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
