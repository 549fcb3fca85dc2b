"""Run an ONNX export (:mod:`sam3tune.ship.onnx_export`) with onnxruntime, called like the torch model.

>>> model = OnnxSam3("exported/")            # the folder, or any .onnx file in it
>>> outputs = model(pixel_values, image_index, input_ids, attention_mask)   # torch tensors in and out

``outputs`` holds ``pred_logits``, ``pred_boxes``, ``presence_logits`` and ``pred_masks`` as
``Sam3ForTraining`` returns them in eval mode, so :class:`~sam3tune.predict.Predictor` and the evaluation
postprocess them with the same code as the torch path.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from sam3tune.errors import require_package
from sam3tune.model.hub import ModelSpecError
from sam3tune.ship.onnx_export import GRAPHS, MANIFEST, OUTPUTS, OnnxManifest


def onnx_export_dir(spec: str | Path) -> Path | None:
    """The export folder ``spec`` names (the folder itself or one of its ``.onnx`` files), else None."""
    path = Path(spec)
    if path.suffix == ".onnx":
        path = path.parent
    return path if (path / MANIFEST).is_file() else None


class OnnxSam3:
    """The three graphs of an export in onnxruntime sessions (CPU unless ``providers`` says otherwise)."""

    def __init__(self, spec: str | Path, providers: Sequence[str] | None = None, threads: int | None = None):
        onnxruntime = require_package("onnxruntime", "running an ONNX export", "pip install 'sam3tune[onnx]'")
        directory = onnx_export_dir(spec)
        if directory is None:
            raise ModelSpecError(
                f"{spec}: no {MANIFEST} there, not a `sam3tune export --format onnx` folder"
            )
        self.directory = directory
        self.manifest = OnnxManifest.read(directory)
        options = onnxruntime.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        providers = list(providers or ["CPUExecutionProvider"])
        self.sessions = {}
        for name in GRAPHS:
            path = directory / f"{name}.onnx"
            if not path.is_file():
                raise ModelSpecError(f"{path} is missing from the export")
            self.sessions[name] = onnxruntime.InferenceSession(str(path), options, providers=providers)

    @property
    def image_size(self) -> int:
        return self.manifest.image_size

    def encode_images(self, pixel_values: np.ndarray) -> list[np.ndarray]:
        """(I, 3, S, S) float32 -> the FPN levels and positions (the decoder's first inputs)."""
        return self.sessions["image_encoder"].run(None, {"pixel_values": pixel_values})

    def encode_text(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """(B, L) int64 token ids and mask -> text features (B, L, d)."""
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
        return self.sessions["text_encoder"].run(None, feeds)[0]

    def decode(
        self,
        images: list[np.ndarray],
        image_index: np.ndarray,
        text: np.ndarray,
        attention_mask: np.ndarray,
    ) -> dict[str, np.ndarray]:
        """Image features (from :meth:`encode_images`), the image row of each query, its text features
        and mask -> the output arrays."""
        names = [f"level_{k}" for k in range(self.manifest.num_levels)] + ["positions"]
        feeds = dict(zip(names, images, strict=True))
        feeds.update(image_index=image_index, text_features=text, attention_mask=attention_mask)
        return dict(zip(OUTPUTS, self.sessions["decoder"].run(None, feeds), strict=True))

    def __call__(
        self, pixel_values: Tensor, image_index: Tensor, input_ids: Tensor, attention_mask: Tensor
    ) -> dict[str, Tensor]:
        """The final-layer outputs of ``Sam3ForTraining`` (eval) as CPU torch tensors."""
        images = self.encode_images(_array(pixel_values, np.float32))
        mask = _array(attention_mask, np.int64)
        text = self.encode_text(_array(input_ids, np.int64), mask)
        outputs = self.decode(images, _array(image_index, np.int64), text, mask)
        return {key: torch.from_numpy(value) for key, value in outputs.items()}


def _array(tensor: Tensor, dtype: type) -> np.ndarray:
    return np.ascontiguousarray(tensor.detach().cpu().numpy().astype(dtype, copy=False))


def compare_with_torch(spec: str | Path, export_dir: str | Path, seed: int = 1) -> float:
    """The largest absolute difference between the torch model ``spec`` and its export in onnxruntime
    over every output, on random images and prompts of other sizes than the export traced (3 images,
    5 queries, prompts of 1-6 words), so the dynamic axes are exercised."""
    from sam3tune.model import Sam3ForTraining, load_model

    bundle = load_model(spec)
    model = Sam3ForTraining(bundle.model, bundle.tokenize, one_to_many=False).eval()
    size = bundle.image_size
    pixel_values = torch.rand(3, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    prompts = ["cat", "a small red car", "dog", "one two three four five six", "a b"]
    input_ids, attention_mask = bundle.tokenize(prompts)
    image_index = torch.tensor([0, 2, 1, 2, 0])
    with torch.no_grad():
        expected = model(pixel_values, image_index, input_ids, attention_mask)
    got = OnnxSam3(export_dir)(pixel_values, image_index, input_ids, attention_mask)
    return max(float((expected[k].float() - got[k]).abs().max()) for k in OUTPUTS)
