"""A model spec loaded for inference: SAM 3 in eval mode (or an ONNX export in onnxruntime), its tokenizer
and input size, and its forward on a :class:`~sam3tune.data.Batch`.

Evaluation (:mod:`sam3tune.eval.api`) runs models through :class:`InferenceModel`; the ``Predictor`` of
``sam3tune.predict`` is one, with postprocessing and file writing on top.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from sam3tune.data import Batch, Sample, collate
from sam3tune.data.transforms import eval_geometry, transform_image
from sam3tune.devices import resolve_device
from sam3tune.model import Sam3ForTraining, Tokenizer, load_model
from sam3tune.model.hub import ModelSpecError
from sam3tune.model.tokenizer import load_tokenizer


class InferenceModel:
    """A SAM 3 (or anything called like one) in eval mode with its tokenizer.

    Args:
        model: called as ``model(pixel_values, image_index, input_ids, attention_mask)`` (plus
            ``exemplar_boxes``, ``exemplar_labels`` for box prompts), returning the outputs dict of
            ``docs/architecture.md``: a module (e.g. ``Sam3ForTraining``) or an ONNX export in onnxruntime
            (:class:`~sam3tune.ship.onnx_model.OnnxSam3`, runs on the CPU; text prompts only).
        tokenize: the model's tokenizer.
        image_size: the square input side S of the model.
        device: where the model runs (default ``auto``: CUDA when available, see ``sam3tune.devices``).
    """

    def __init__(
        self, model: nn.Module, tokenize: Tokenizer, image_size: int, device: torch.device | str | None = None
    ):
        self.device = torch.device(device) if device is not None else resolve_device("auto")
        is_module = isinstance(model, nn.Module)
        self.model = model.eval().to(self.device) if is_module else model
        self.tokenize = tokenize
        self.image_size = image_size
        self._dtype = next(model.parameters()).dtype if is_module else torch.float32

    @staticmethod
    def load_parts(
        spec: str | Path,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        allow_missing_weights: bool = False,
    ) -> tuple[nn.Module, Tokenizer, int, torch.device | str | None]:
        """``(model, tokenize, image_size, device)`` of ``spec``: a ``save_pretrained`` directory, a hub id,
        a named architecture, or an ONNX export (``sam3tune export --format onnx``: its folder or one of
        its ``.onnx`` files), which runs in onnxruntime on the CPU (``device`` and ``dtype`` do not
        apply)."""
        from sam3tune.ship.onnx_model import OnnxSam3, onnx_export_dir  # onnxruntime: only for exports

        onnx_dir = onnx_export_dir(spec)
        if onnx_dir is not None:
            model = OnnxSam3(onnx_dir)
            return model, load_tokenizer(onnx_dir, model.manifest.text_max_length), model.image_size, "cpu"
        bundle = load_model(spec, dtype=dtype, allow_missing_weights=allow_missing_weights)
        model = Sam3ForTraining(bundle.model, bundle.tokenize, one_to_many=False)
        return model, bundle.tokenize, bundle.image_size, device

    @classmethod
    def load(
        cls,
        spec: str | Path,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        allow_missing_weights: bool = False,
    ) -> InferenceModel:
        """The model of ``spec`` (see :meth:`load_parts`) ready for :meth:`forward`."""
        model, tokenize, size, device = cls.load_parts(
            spec, device=device, dtype=dtype, allow_missing_weights=allow_missing_weights
        )
        return cls(model, tokenize, size, device)

    def require_pytorch(self, feature: str) -> None:
        """Refuse ``feature`` (box prompts, the semantic head, the exemplar protocol) on an ONNX export,
        whose graphs take text prompts only, naming the PyTorch model it was exported from
        (:class:`~sam3tune.model.hub.ModelSpecError`)."""
        if isinstance(self.model, nn.Module):
            return
        manifest = getattr(self.model, "manifest", None)
        where = getattr(self.model, "directory", "the model")
        source = f" ({manifest.source})" if manifest is not None else ""
        raise ModelSpecError(
            f"{feature} need(s) the PyTorch model: {where} is an ONNX export, whose graphs take text prompts "
            f"only; give --model the model it was exported from{source}"
        )

    @torch.no_grad()
    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        """The model's outputs for a :class:`~sam3tune.data.Batch` (eval mode, no gradients)."""
        inputs = {k: v.to(self.device) for k, v in batch.model_inputs().items() if v is not None}
        inputs["pixel_values"] = inputs["pixel_values"].to(self._dtype)
        return self.model(**inputs)

    def samples(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> list[Sample]:
        """Every prompt on every image (``image_id`` = its index), resized as in evaluation."""
        geometry = eval_geometry(self.image_size)
        return [
            Sample(
                image=transform_image(image.convert("RGB"), geometry),
                image_id=index,
                orig_size=(image.height, image.width),
                category_ids=list(range(1, len(prompts) + 1)),
                prompts=list(prompts),
                targets=[{"boxes": torch.zeros(0, 4)} for _ in prompts],
            )
            for index, image in enumerate(images)
        ]

    def batch(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> Batch:
        """:meth:`samples` collated: query ``i * len(prompts) + k`` is prompt ``k`` on image ``i``."""
        return collate(self.samples(images, prompts), self.tokenize)
