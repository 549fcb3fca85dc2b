"""Text- and box-prompted detection and segmentation with a (fine-tuned) SAM 3: the ``Predictor`` API.

>>> predictor = Predictor.load("runs/fruits/model", score_threshold=0.5)
>>> found = predictor.predict("tray.jpg", ["date", "fig"])   # {"date": Detections, "fig": Detections}
>>> found["date"].boxes  # (N, 4) xyxy pixels of tray.jpg; .scores (N,); .mask_array() (N, H, W) bool
>>> like = predictor.predict("tray.jpg", boxes=[(10, 20, 60, 80)])  # {"visual": every object like it}

Every prompt is asked on every image; the image is resized to the model's square input as in
evaluation, and detections come back in the original image's pixels (see
:mod:`sam3tune.eval.postprocess`). ``predict_files`` writes a COCO results JSON and one overlay
PNG per image, keeping every finished image whatever stops the run. Exemplar boxes (xyxy pixels of the
image; ``boxes`` positive, ``negative_boxes`` negative) go with every prompt, or, without a prompt, form
one query whose text is the placeholder ``"visual"``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from sam3tune.data import Batch, Sample, collate
from sam3tune.data.exemplars import VISUAL_PROMPT
from sam3tune.data.images import ImageFileError, probe_image, read_rgb
from sam3tune.data.regions import PillowRegions, open_regions
from sam3tune.data.tiling import tile_windows
from sam3tune.data.transforms import eval_geometry, transform_image
from sam3tune.eval.coco_results import save_coco_results
from sam3tune.eval.config import PostprocessConfig
from sam3tune.eval.postprocess import Detections, postprocess
from sam3tune.eval.semantic_eval import THRESHOLD as SEMANTIC_THRESHOLD
from sam3tune.eval.semantic_eval import label_map, semantic_scores
from sam3tune.eval.sliced import merge_detections, region_detections
from sam3tune.model import Sam3ForTraining, Tokenizer, load_model
from sam3tune.model.tokenizer import load_tokenizer
from sam3tune.output_files import claim_output_folder, write_text_atomic, writing
from sam3tune.overlay import draw_overlay
from sam3tune.progress import progress_bar

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
#: What ``predict_files`` writes in its output folder (``--overwrite`` replaces exactly these).
OUTPUTS = ("predictions.json", "predictions.jsonl", "index.json", "overlays", "semantic")
OVERLAY_MAX_PIXELS = 64_000_000
"""Images above this size get no overlay PNG (``overlay: null`` in ``index.json``; sliced prediction)."""
# what PIL raises for a truncated, corrupt, oversized or non-image file
UNREADABLE_IMAGE = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)
log = logging.getLogger(__name__)


class Predictor:
    """A SAM 3 model in eval mode plus its tokenizer and postprocessing settings.

    Args:
        model: called as ``model(pixel_values, image_index, input_ids, attention_mask)`` (plus
            ``exemplar_boxes``, ``exemplar_labels`` for box prompts), returning the outputs dict of
            ``docs/architecture.md``: a module (e.g. ``Sam3ForTraining``) or an ONNX export in onnxruntime
            (:class:`~sam3tune.ship.onnx_model.OnnxSam3`, runs on the CPU; text prompts only).
        tokenize: the model's tokenizer.
        image_size: the square input side S of the model.
        config: postprocessing (score threshold, NMS, ...); default: score >= 0.5.
        device: where the model runs (default: CUDA when available).
    """

    def __init__(
        self,
        model: nn.Module,
        tokenize: Tokenizer,
        image_size: int,
        config: PostprocessConfig | None = None,
        device: torch.device | str | None = None,
    ):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        is_module = isinstance(model, nn.Module)
        self.model = model.eval().to(self.device) if is_module else model
        self.tokenize = tokenize
        self.image_size = image_size
        self.config = config or PostprocessConfig(score_threshold=0.5)
        self._dtype = next(model.parameters()).dtype if is_module else torch.float32

    @classmethod
    def load(
        cls,
        spec: str | Path,
        *,
        config: PostprocessConfig | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        allow_missing_weights: bool = False,
    ) -> Predictor:
        """Load ``spec``: a ``save_pretrained`` directory, a hub id, a named architecture, or an ONNX
        export (``sam3tune export --format onnx``: its folder or one of its ``.onnx`` files), which runs
        in onnxruntime on the CPU (``device`` and ``dtype`` do not apply)."""
        from sam3tune.ship.onnx_model import onnx_export_dir

        onnx_dir = onnx_export_dir(spec)
        if onnx_dir is not None:
            from sam3tune.ship.onnx_model import OnnxSam3

            model = OnnxSam3(onnx_dir)
            tokenize = load_tokenizer(onnx_dir, model.manifest.text_max_length)
            return cls(model, tokenize, model.image_size, config, "cpu")
        bundle = load_model(spec, dtype=dtype, allow_missing_weights=allow_missing_weights)
        model = Sam3ForTraining(bundle.model, bundle.tokenize, one_to_many=False)
        return cls(model, bundle.tokenize, bundle.image_size, config, device)

    @torch.no_grad()
    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        """The model's outputs for a :class:`~sam3tune.data.Batch` (eval mode, no gradients)."""
        inputs = {k: v.to(self.device) for k, v in batch.model_inputs().items() if v is not None}
        inputs["pixel_values"] = inputs["pixel_values"].to(self._dtype)
        return self.model(**inputs)

    def predict(
        self,
        image: Image.Image | str | Path,
        prompts: Sequence[str] = (),
        boxes: Sequence[Sequence[float]] = (),
        negative_boxes: Sequence[Sequence[float]] = (),
    ) -> dict[str, Detections]:
        """Detections of every prompt on one image, keyed by prompt (``"visual"`` for a box-only query),
        in the image's pixels. ``boxes`` / ``negative_boxes``: exemplar boxes, xyxy pixels of ``image``."""
        if self.config.tiling.enabled:
            if boxes or negative_boxes:
                raise ValueError("box prompts (--box) do not go with sliced prediction (postprocess.tiling)")
            return self.predict_sliced(image, prompts)
        if not isinstance(image, Image.Image):
            image = read_rgb(Path(image))
        return self.predict_images([image], prompts, boxes, negative_boxes)[0]

    def predict_sliced(
        self, image: Image.Image | str | Path, prompts: Sequence[str], progress: bool = False
    ) -> dict[str, Detections]:
        """:meth:`predict` tile by tile (``config.tiling``, :mod:`sam3tune.eval.sliced`): each tile (read
        by window from the file, see :mod:`sam3tune.data.regions`) is resized to the model input and
        encoded once for all prompts, ``tiling.tiles_per_forward`` tiles per forward; with
        ``tiling.full_image`` the whole image resized once too; the detections are mapped back to the
        image and merged across tile borders. Memory: the tiles of one forward, never the image as
        floats."""
        prompts = _check_prompts(prompts)
        tiling = self.config.tiling
        if tiling.size is None:
            raise ValueError("predict_sliced needs postprocess.tiling.size (the tile side in pixels)")
        reader = PillowRegions.of(image) if isinstance(image, Image.Image) else open_regions(image)
        with reader:
            width, height = reader.size
            windows = tile_windows(width, height, tiling.size, tiling.overlap)
            parts: dict[str, list[Detections]] = {p: [] for p in prompts}
            chunks = range(0, len(windows), tiling.tiles_per_forward)
            for start in progress_bar(chunks, desc="tiles", unit="batch", disable=not progress, leave=False):
                chunk = windows[start : start + tiling.tiles_per_forward]
                tiles = [reader.read(window, at_least=self.image_size) for window in chunk]
                outputs = self.forward(self._batch(tiles, prompts))
                for t, window in enumerate(chunk):
                    for k, prompt in enumerate(prompts):
                        row = t * len(prompts) + k
                        parts[prompt].append(
                            region_detections(outputs, row, window, (height, width), self.config)
                        )
            if tiling.full_image and len(windows) > 1:
                outputs = self.forward(self._batch([reader.overview(self.image_size)], prompts))
                whole = (0, 0, width, height)
                for k, prompt in enumerate(prompts):
                    parts[prompt].append(
                        region_detections(
                            outputs, k, whole, (height, width), self.config, mask_inside_box=True
                        )
                    )
        regions = [*windows, *([None] if tiling.full_image and len(windows) > 1 else [])]
        return {prompt: merge_detections(parts[prompt], self.config, regions) for prompt in prompts}

    def predict_images(
        self,
        images: Sequence[Image.Image],
        prompts: Sequence[str] = (),
        boxes: Sequence[Sequence[float]] = (),
        negative_boxes: Sequence[Sequence[float]] = (),
    ) -> list[dict[str, Detections]]:
        """:meth:`predict` for several images in one forward pass (the same exemplar boxes on each)."""
        prompts = _check_prompts(prompts, has_boxes=bool(boxes))
        batch = self._batch(images, prompts, boxes, negative_boxes)
        sizes = [tuple(batch.orig_sizes[row].tolist()) for row in batch.image_index.tolist()]
        detections = postprocess(self.forward(batch), sizes, self.config)
        n = len(prompts)
        return [dict(zip(prompts, detections[i * n : (i + 1) * n], strict=True)) for i in range(len(images))]

    def predict_semantic(
        self, image: Image.Image | str | Path, prompts: Sequence[str], threshold: float = SEMANTIC_THRESHOLD
    ) -> np.ndarray:
        """The semantic head's label map of one image: ``(H, W)`` int64 in the image's pixels, ``i`` where
        the ``i``-th prompt (1-based) scores highest and above ``threshold``, 0 where none does (score =
        semantic probability x presence probability, see :mod:`sam3tune.eval.semantic_eval`)."""
        if not isinstance(image, Image.Image):
            image = read_rgb(Path(image))
        prompts = _check_prompts(prompts)
        outputs = self.forward(self._batch([image], prompts))
        scores = semantic_scores(outputs, (image.height, image.width)).cpu()
        return label_map(scores, torch.arange(1, len(prompts) + 1), threshold).clamp(min=0).numpy()

    def _batch(
        self,
        images: Sequence[Image.Image],
        prompts: list[str],
        boxes: Sequence[Sequence[float]] = (),
        negative_boxes: Sequence[Sequence[float]] = (),
    ) -> Batch:
        """Every prompt (with the exemplar boxes, if any) on every image, resized as in evaluation."""
        geometry = eval_geometry(self.image_size)
        samples = []
        for index, image in enumerate(images):
            sample = Sample(
                image=transform_image(image.convert("RGB"), geometry),
                image_id=index,
                orig_size=(image.height, image.width),
                category_ids=list(range(1, len(prompts) + 1)),
                prompts=list(prompts),
                targets=[{"boxes": torch.zeros(0, 4)} for _ in prompts],
            )
            if boxes or negative_boxes:
                exemplars, labels = exemplar_tensors(boxes, negative_boxes, image.width, image.height)
                sample.exemplar_boxes = [exemplars] * len(prompts)
                sample.exemplar_labels = [labels] * len(prompts)
            samples.append(sample)
        return collate(samples, self.tokenize)

    def predict_files(
        self,
        images: Sequence[str | Path],
        prompts: Sequence[str],
        out_dir: str | Path,
        overlays: bool = True,
        progress: bool = True,
        overwrite: bool = False,
        boxes: Sequence[Sequence[float]] = (),
        negative_boxes: Sequence[Sequence[float]] = (),
        semantic: bool = False,
    ) -> PredictedFiles:
        """Predict every image file into ``out_dir`` (see :data:`OUTPUTS`): ``predictions.json`` (COCO
        results), ``index.json`` (COCO ``images`` and ``categories``: category ``i`` is the i-th prompt, or
        ``visual``; the ``exemplars`` boxes; the files ``skipped`` and why, ``complete``) and, with
        ``overlays``, ``overlays/<image stem>.png`` (exemplar boxes drawn too). ``boxes`` /
        ``negative_boxes``: exemplar boxes (xyxy pixels) asked on every image, as in :meth:`predict`. With
        ``semantic``, also ``semantic/<image stem>.png``: the semantic head's label map
        (:meth:`predict_semantic`: pixel value ``i`` = category ``i``, 0 = none).

        A file that cannot be read as an image (truncated, corrupt, not an image) is skipped and counted.
        Finished images are never lost: each is appended to ``predictions.jsonl`` as it is done, and
        ``predictions.json`` and ``index.json`` are written on any exit (an error or Ctrl-C at image 900
        keeps the 899 before it, with ``complete: false``); ``predictions.jsonl`` is removed once they
        are. An ``out_dir`` that already holds results is refused unless ``overwrite`` (which removes
        them first, old overlays included)."""
        prompts = _check_prompts(prompts, has_boxes=bool(boxes))
        if self.config.tiling.enabled and (boxes or negative_boxes):
            raise ValueError("box prompts (--box) do not go with sliced prediction (postprocess.tiling)")
        exemplars = [(b, True) for b in boxes] + [(b, False) for b in negative_boxes]
        out_dir = claim_output_folder(out_dir, OUTPUTS, overwrite)
        if overlays:
            (out_dir / "overlays").mkdir()
        if semantic:
            (out_dir / "semantic").mkdir()
        done = PredictedFiles(out_dir)
        lines = out_dir / "predictions.jsonl"
        used_names: set[str] = set()
        try:
            with writing(lines), open(lines, "a", encoding="utf-8") as journal:
                for path in progress_bar(list(images), desc="predict", unit="image", disable=not progress):
                    path = Path(path)
                    try:
                        image, size = self._read_for_prediction(path)
                    except UNREADABLE_IMAGE as err:
                        done.skipped.append(
                            {"file_name": str(path), "reason": f"{type(err).__name__}: {err}"}
                        )
                        log.warning("skipped %s: not a readable image (%s)", path, err)
                        continue
                    image_id = len(done.images) + 1
                    if self.config.tiling.enabled:  # a bar over the tiles of each image
                        found = self.predict_sliced(path if image is None else image, prompts, progress)
                    else:
                        found = self.predict(image, prompts, boxes, negative_boxes)
                    entry = {"id": image_id, "file_name": str(path), "height": size[1], "width": size[0]}
                    name = _unique_name(path.stem, used_names)
                    if (overlays or semantic) and image is None and size[0] * size[1] <= OVERLAY_MAX_PIXELS:
                        image = read_rgb(path)
                    if overlays and image is None:
                        entry["overlay"] = None
                        log.warning(
                            "%s: no overlay (%dx%d px is above %d megapixels)",
                            path,
                            *size,
                            OVERLAY_MAX_PIXELS // 1_000_000,
                        )
                    elif overlays:
                        with writing(out_dir / "overlays" / f"{name}.png"):
                            draw_overlay(image, list(found.items()), exemplars=exemplars).save(
                                out_dir / "overlays" / f"{name}.png"
                            )
                        entry["overlay"] = f"overlays/{name}.png"
                    if semantic and image is not None:
                        labels = self.predict_semantic(image, prompts)
                        mode, dtype = ("L", np.uint8) if len(prompts) < 256 else ("I;16", np.uint16)
                        with writing(out_dir / "semantic" / f"{name}.png"):
                            Image.fromarray(labels.astype(dtype), mode=mode).save(
                                out_dir / "semantic" / f"{name}.png"
                            )
                        entry["semantic"] = f"semantic/{name}.png"
                    results = [
                        r for c, p in enumerate(prompts, 1) for r in found[p].to_coco_results(image_id, c)
                    ]
                    journal.write(json.dumps({**entry, "detections": results}) + "\n")
                    journal.flush()
                    done.images.append(entry)
                    done.results.extend(results)
            done.complete = True
        finally:
            save_coco_results(done.results, out_dir / "predictions.json")
            index = {
                "images": done.images,
                "categories": [{"id": i, "name": p} for i, p in enumerate(prompts, 1)],
                "exemplars": {
                    "positive": [list(b) for b in boxes],
                    "negative": [list(b) for b in negative_boxes],
                },
                "skipped": done.skipped,
                "complete": done.complete,
            }
            write_text_atomic(out_dir / "index.json", json.dumps(index, indent=2))
            lines.unlink(missing_ok=True)  # everything it held is in predictions.json now
        return done

    def _read_for_prediction(self, path: Path) -> tuple[Image.Image | None, tuple[int, int]]:
        """The decoded image and its ``(width, height)``; with sliced prediction the image is only
        checked (:func:`~sam3tune.data.images.probe_image`) and None: the tiles are read by window."""
        if not self.config.tiling.enabled:
            image = read_rgb(path)
            return image, image.size
        try:
            info = probe_image(path)
        except ImageFileError as err:
            raise OSError(str(err)) from err
        return None, (info.width, info.height)


@dataclass
class PredictedFiles:
    """What :meth:`Predictor.predict_files` wrote to ``out_dir``: the COCO ``results``, the ``images``
    entries of ``index.json``, the files ``skipped`` (``file_name``, ``reason``), whether it finished."""

    out_dir: Path
    results: list[dict] = field(default_factory=list)
    images: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    complete: bool = False


def collect_images(paths: Sequence[str | Path]) -> list[Path]:
    """Image files named directly, plus the image files (by suffix, sorted) of named folders."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found.extend(
                sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            )
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such image file or folder")
    if not found:
        raise FileNotFoundError(
            f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {', '.join(map(str, paths))}"
        )
    return found


def exemplar_tensors(
    boxes: Sequence[Sequence[float]], negative_boxes: Sequence[Sequence[float]], width: int, height: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exemplar boxes in xyxy pixels of a ``width x height`` image -> ``(k, 4)`` cxcywh in [0, 1] of the
    evaluation canvas (a plain resize) and ``(k,)`` labels (1 for ``boxes``, 0 for ``negative_boxes``).

    Boxes are clipped to the image; one with nothing left, or not 4 numbers, is a ``ValueError``."""
    rows = []
    for box in [*boxes, *negative_boxes]:
        values = [float(v) for v in box]
        if len(values) != 4 or not all(map(torch.isfinite, torch.tensor(values))):
            raise ValueError(f"an exemplar box must be 4 finite numbers x0,y0,x1,y1, got {list(box)!r}")
        x0, x1 = (min(max(v, 0.0), width) for v in values[0::2])
        y0, y1 = (min(max(v, 0.0), height) for v in values[1::2])
        if x1 <= x0 or y1 <= y0:
            raise ValueError(
                f"exemplar box {values} is empty inside the {width}x{height} image (need x0 < x1, y0 < y1)"
            )
        rows.append([(x0 + x1) / 2 / width, (y0 + y1) / 2 / height, (x1 - x0) / width, (y1 - y0) / height])
    labels = [1] * len(boxes) + [0] * len(negative_boxes)
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 4), torch.tensor(labels, dtype=torch.int64)


def _check_prompts(prompts: Sequence[str], has_boxes: bool = False) -> list[str]:
    """The stripped prompts; with positive exemplar boxes and no prompt, the placeholder ``"visual"``."""
    if isinstance(prompts, str):
        raise TypeError("prompts must be a list of strings, got a single string")
    prompts = [p.strip() for p in prompts]
    if not prompts and has_boxes:
        return [VISUAL_PROMPT]
    if not prompts or any(not p for p in prompts):
        raise ValueError(
            f"give at least one non-empty prompt or a positive exemplar box, got prompts {prompts!r}"
        )
    if len(set(prompts)) != len(prompts):
        raise ValueError(f"prompts repeat: {prompts!r}")
    return prompts


def _unique_name(stem: str, used: set[str]) -> str:
    name, k = stem, 1
    while name in used:
        k += 1
        name = f"{stem}_{k}"
    used.add(name)
    return name
