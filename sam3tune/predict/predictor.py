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

from sam3tune.config import ConfigError
from sam3tune.data import Batch, collate
from sam3tune.data.exemplars import VISUAL_PROMPT
from sam3tune.data.images import ImageFileError, probe_image, read_rgb
from sam3tune.data.queries import prompt_key, prompts_cut
from sam3tune.errors import UserError, on_path
from sam3tune.eval.coco_results import save_coco_results
from sam3tune.eval.config import MAX_QUERIES_PER_FORWARD, PostprocessConfig
from sam3tune.eval.inference import InferenceModel
from sam3tune.eval.postprocess import SEMANTIC_THRESHOLD, Detections, postprocess, semantic_scores
from sam3tune.eval.sliced import predict_sliced
from sam3tune.model import Tokenizer
from sam3tune.output_files import claim_output_folder, write_text_atomic, writing
from sam3tune.overlay import draw_overlay
from sam3tune.progress import progress_bar

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
#: What ``predict_files`` writes in its output folder (``--overwrite`` replaces exactly these).
OUTPUTS = ("predictions.json", "predictions.jsonl", "index.json", "overlays", "semantic")
OVERLAY_MAX_PIXELS = 64_000_000
"""Images above this size get no overlay or label map PNG (``null`` in ``index.json``; sliced prediction)."""
# what PIL raises for a truncated, corrupt, oversized or non-image file
UNREADABLE_IMAGE = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)
log = logging.getLogger(__name__)


class Predictor(InferenceModel):
    """A SAM 3 model in eval mode (:class:`~sam3tune.eval.inference.InferenceModel`: the model, its
    tokenizer, input size and device) plus postprocessing settings.

    Args:
        model, tokenize, image_size, device: see :class:`~sam3tune.eval.inference.InferenceModel`.
        config: postprocessing (score threshold, NMS, ...); default: score >= 0.5.
        max_queries: at most this many queries (image x prompt) per forward pass; more prompts are asked in
            several passes, so that thousands of prompts need no more memory than ``max_queries``.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenize: Tokenizer,
        image_size: int,
        config: PostprocessConfig | None = None,
        device: torch.device | str | None = None,
        max_queries: int = MAX_QUERIES_PER_FORWARD,
    ):
        super().__init__(model, tokenize, image_size, device)
        if max_queries < 1:
            raise ConfigError(f"max_queries must be at least 1, got {max_queries}", key="max_queries")
        self.config = config or PostprocessConfig(score_threshold=0.5)
        self.max_queries = max_queries

    @classmethod
    def load(
        cls,
        spec: str | Path,
        *,
        config: PostprocessConfig | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        allow_missing_weights: bool = False,
        max_queries: int = MAX_QUERIES_PER_FORWARD,
    ) -> Predictor:
        """Load ``spec``: a ``save_pretrained`` directory, a hub id, a named architecture, or an ONNX
        export (``sam3tune export --format onnx``: its folder or one of its ``.onnx`` files), which runs
        in onnxruntime on the CPU (``device`` and ``dtype`` do not apply)."""
        model, tokenize, size, device = cls.load_parts(
            spec, device=device, dtype=dtype, allow_missing_weights=allow_missing_weights
        )
        return cls(model, tokenize, size, config, device, max_queries)

    def predict(
        self,
        image: Image.Image | str | Path,
        prompts: Sequence[str] = (),
        boxes: Sequence[Sequence[float]] = (),
        negative_boxes: Sequence[Sequence[float]] = (),
    ) -> dict[str, Detections]:
        """Detections of every prompt on one image, keyed by prompt (``"visual"`` for a box-only query),
        in the image's pixels. ``boxes`` / ``negative_boxes``: exemplar boxes, xyxy pixels of ``image``.
        With ``config.tiling`` on, the image is predicted tile by tile (:meth:`predict_sliced`)."""
        if self.config.tiling.enabled:
            _refuse_boxes_when_sliced(boxes, negative_boxes)
            return self.predict_sliced(image, prompts)
        name = None
        if not isinstance(image, Image.Image):
            name, image = image, read_rgb(Path(image))
        try:
            return self.predict_images([image], prompts, boxes, negative_boxes)[0]
        except BoxOutsideImage as err:
            raise BoxOutsideImage(f"{name}: {err}" if name is not None else str(err)) from err

    def predict_sliced(
        self, image: Image.Image | str | Path, prompts: Sequence[str], progress: bool = False
    ) -> dict[str, Detections]:
        """:meth:`predict` tile by tile with ``config.tiling`` (:func:`~sam3tune.eval.sliced.predict_sliced`):
        a file is read by window, never decoded whole, so it may be far larger than memory allows as
        floats; text prompts only."""
        prompts = self._checked_prompts(prompts)[0]
        return predict_sliced(self, image, prompts, self.config, progress, self.max_queries)

    def predict_images(
        self,
        images: Sequence[Image.Image],
        prompts: Sequence[str] = (),
        boxes: Sequence[Sequence[float]] = (),
        negative_boxes: Sequence[Sequence[float]] = (),
    ) -> list[dict[str, Detections]]:
        """:meth:`predict` for several images in one forward pass (the same exemplar boxes on each)."""
        prompts, _ = self._checked_prompts(prompts, boxes, negative_boxes)
        return self._run(self._batch(images, prompts, boxes, negative_boxes), prompts)[0]

    def predict_semantic(
        self, image: Image.Image | str | Path, prompts: Sequence[str], threshold: float = SEMANTIC_THRESHOLD
    ) -> np.ndarray:
        """The semantic head's label map of one image: ``(H, W)`` int64 in the image's pixels, ``i`` where
        the ``i``-th prompt (1-based) scores highest and above ``threshold``, 0 where none does (score =
        semantic probability x presence probability, see :mod:`sam3tune.eval.postprocess`)."""
        if not isinstance(image, Image.Image):
            image = read_rgb(Path(image))
        prompts, _ = self._checked_prompts(prompts, semantic=True)
        batch = self._batch([image], prompts)
        return self._run(batch, prompts, detect=False, label_map_of=image, threshold=threshold)[1]

    def _checked_prompts(
        self,
        prompts: Sequence[str],
        boxes: Sequence[Sequence[float]] = (),
        negative_boxes: Sequence[Sequence[float]] = (),
        semantic: bool = False,
    ) -> tuple[list[str], dict[str, int]]:
        """The stripped prompts (see ``_check_prompts``) and those the tokenizer cuts to its length (prompt
        -> tokens kept; warned in the log: the words past it are not seen). Prompts cut to the same ids are
        refused (``ConfigError``), so are box prompts and the semantic head on an ONNX export (text
        prompts only)."""
        prompts = _check_prompts(prompts, has_boxes=bool(boxes))
        if boxes or negative_boxes:
            self.require_pytorch("box prompts (--box, --neg-box)")
        if semantic:
            self.require_pytorch("the semantic head (--semantic)")
        cut, same = prompts_cut(self.tokenize, prompts)
        if same:
            raise ConfigError(
                f"prompts the tokenizer cuts to the same {self.tokenize.max_length} tokens: {_groups(same)}; "
                "the model cannot tell them apart: shorten them so that they differ early",
                key="prompts",
            )
        for prompt, kept in cut.items():
            log.warning(
                "prompt %r is cut to the tokenizer's %d tokens: the model does not see the words past them",
                prompt,
                kept,
            )
        return prompts, cut

    def _run(
        self,
        batch: Batch,
        prompts: list[str],
        *,
        detect: bool = True,
        label_map_of: Image.Image | None = None,
        threshold: float = SEMANTIC_THRESHOLD,
    ) -> tuple[list[dict[str, Detections]], np.ndarray | None]:
        """Forward passes of at most ``max_queries`` queries over ``batch`` (:meth:`Batch.query_chunks`):
        per image, prompt -> its detections in the image's pixels (with ``detect``), and the semantic
        label map of the one image ``label_map_of`` (see :meth:`predict_semantic`; a running argmax, so
        that only one piece's maps are held at a time)."""
        detections: list[Detections] = []
        best = index = None
        start = 0
        for piece in batch.query_chunks(self.max_queries):
            outputs = self.forward(piece)
            if detect:
                sizes = [tuple(piece.orig_sizes[row].tolist()) for row in piece.image_index.tolist()]
                detections += postprocess(outputs, sizes, self.config)
            if label_map_of is not None:
                size = (label_map_of.height, label_map_of.width)
                value, found = semantic_scores(outputs, size).cpu().max(dim=0)
                found = found + start
                if best is None:
                    best, index = value, found
                else:  # the earlier prompt keeps a tie, as one argmax over every prompt does
                    better = value > best
                    best, index = torch.where(better, value, best), torch.where(better, found, index)
            start += piece.num_queries
        n = len(prompts)
        per_image = [
            dict(zip(prompts, detections[i : i + n], strict=True)) for i in range(0, len(detections), n)
        ]
        labels = None
        if best is not None:
            labels = torch.where(best > threshold, index + 1, torch.zeros_like(index)).numpy()
        return per_image, labels

    def _batch(
        self,
        images: Sequence[Image.Image],
        prompts: list[str],
        boxes: Sequence[Sequence[float]] = (),
        negative_boxes: Sequence[Sequence[float]] = (),
    ) -> Batch:
        """Every prompt (with the exemplar boxes, if any) on every image, resized as in evaluation."""
        samples = self.samples(images, prompts)
        if boxes or negative_boxes:
            for sample, image in zip(samples, images, strict=True):
                exemplars, labels = exemplar_tensors(boxes, negative_boxes, image.width, image.height)
                sample.exemplar_boxes = [exemplars] * len(prompts)
                sample.exemplar_labels = [labels] * len(prompts)
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
        ``semantic``, also ``semantic/<image stem>.png``: the semantic head's label map of the same forward
        pass (pixel value ``i`` = category ``i``, 0 = none; see :meth:`predict_semantic`). Each image
        runs through the model once.

        A file that cannot be read as an image (truncated, corrupt, not an image), or an image that an
        exemplar box does not fit (nothing of it inside the image), is skipped, counted and named with the
        reason. Prompts the tokenizer cuts are warned about and listed in ``index.json``'s
        ``prompts_cut``.
        Finished images are never lost: each is appended to ``predictions.jsonl`` as it is done, and
        ``predictions.json`` and ``index.json`` are written on any exit (an error or Ctrl-C at image 900
        keeps the 899 before it, with ``complete: false``); ``predictions.jsonl`` is removed once they
        are. An ``out_dir`` that already holds results is refused unless ``overwrite`` (which removes
        them first, old overlays included)."""
        prompts, cut = self._checked_prompts(prompts, boxes, negative_boxes, semantic)
        sliced = self.config.tiling.enabled
        if sliced:
            _refuse_boxes_when_sliced(boxes, negative_boxes)
        folder = _OutputFolder(claim_output_folder(out_dir, OUTPUTS, overwrite), overlays, semantic)
        done = PredictedFiles(folder.path, prompts_cut=cut)
        try:
            with folder.journal() as journal:
                for path in progress_bar(list(images), desc="predict", unit="image", disable=not progress):
                    read = _read_image(Path(path), done.skipped, decode=not sliced)
                    if read is None:
                        continue
                    image, (width, height) = read
                    entry = {"id": len(done.images) + 1, "file_name": str(path)}
                    entry.update(height=height, width=width)
                    try:
                        if sliced:  # a bar over the tiles of each image
                            results = self._predict_sliced_file(Path(path), entry, folder, prompts, progress)
                        else:
                            results = self._predict_file(image, entry, folder, prompts, boxes, negative_boxes)
                    except BoxOutsideImage as err:  # the box fits other images of the folder
                        done.skipped.append({"file_name": str(path), "reason": str(err)})
                        log.warning("skipped %s: %s", path, err)
                        continue
                    journal.write(json.dumps({**entry, "detections": results}) + "\n")
                    journal.flush()
                    done.images.append(entry)
                    done.results.extend(results)
            done.complete = True
        finally:
            folder.finish(done, prompts, boxes, negative_boxes)
        return done

    def _predict_file(
        self,
        image: Image.Image,
        entry: dict,
        folder: _OutputFolder,
        prompts: list[str],
        boxes: Sequence[Sequence[float]],
        negative_boxes: Sequence[Sequence[float]],
    ) -> list[dict]:
        """One forward pass of ``image``: its overlay and label map written (paths added to ``entry``, its
        ``index.json`` entry), its COCO results returned (category ``i`` = ``i``-th prompt)."""
        batch = self._batch([image], prompts, boxes, negative_boxes)
        per_image, labels = self._run(batch, prompts, label_map_of=image if folder.semantic else None)
        found = per_image[0]
        name = folder.name_for(Path(entry["file_name"]))
        if folder.overlays:
            exemplars = [(b, True) for b in boxes] + [(b, False) for b in negative_boxes]
            entry["overlay"] = folder.write_overlay(name, image, found, exemplars)
        if labels is not None:
            entry["semantic"] = folder.write_label_map(name, labels, prompts)
        return [r for c, p in enumerate(prompts, 1) for r in found[p].to_coco_results(entry["id"], c)]

    def _predict_sliced_file(
        self, path: Path, entry: dict, folder: _OutputFolder, prompts: list[str], progress: bool
    ) -> list[dict]:
        """:meth:`_predict_file` tile by tile (:meth:`predict_sliced`, read by window). The overlay and
        label map need the whole image decoded: up to :data:`OVERLAY_MAX_PIXELS` only (``null`` above)."""
        found = self.predict_sliced(path, prompts, progress)
        name = folder.name_for(path)
        wanted = folder.overlays or folder.semantic
        image = read_rgb(path) if wanted and entry["width"] * entry["height"] <= OVERLAY_MAX_PIXELS else None
        if image is None and wanted:
            log.warning(
                "%s: no overlay or label map (%dx%d px is above %d megapixels)",
                path,
                entry["width"],
                entry["height"],
                OVERLAY_MAX_PIXELS // 1_000_000,
            )
        if folder.overlays:
            entry["overlay"] = None if image is None else folder.write_overlay(name, image, found, [])
        if folder.semantic:
            labels = None if image is None else self.predict_semantic(image, prompts)
            entry["semantic"] = None if labels is None else folder.write_label_map(name, labels, prompts)
        return [r for c, p in enumerate(prompts, 1) for r in found[p].to_coco_results(entry["id"], c)]


def _read_image(
    path: Path, skipped: list[dict], decode: bool = True
) -> tuple[Image.Image | None, tuple[int, int]] | None:
    """The image at ``path`` (None without ``decode``: only its header is checked, for sliced prediction
    that reads it by window) and its ``(width, height)``; None (counted in ``skipped`` with the reason,
    logged) when it is not an image."""
    try:
        if not decode:
            info = probe_image(path)
            return None, (info.width, info.height)
        image = read_rgb(path)
        return image, image.size
    except (*UNREADABLE_IMAGE, ImageFileError) as err:
        skipped.append({"file_name": str(path), "reason": f"{type(err).__name__}: {err}"})
        log.warning("skipped %s: not a readable image (%s)", path, err)
        return None


def _refuse_boxes_when_sliced(boxes: Sequence[Sequence[float]], negative_boxes: Sequence[Sequence[float]]):
    if boxes or negative_boxes:
        raise ConfigError("box prompts (--box) do not go with sliced prediction (postprocess.tiling)")


class _OutputFolder:
    """The files :meth:`Predictor.predict_files` writes, one small writer each."""

    def __init__(self, path: Path, overlays: bool, semantic: bool):
        self.path, self.overlays, self.semantic = path, overlays, semantic
        self.lines = path / "predictions.jsonl"
        self._names: set[str] = set()
        with writing(path, "--out"):
            for name, wanted in (("overlays", overlays), ("semantic", semantic)):
                if wanted:
                    (path / name).mkdir()

    def journal(self):
        """``predictions.jsonl``, opened for appending one line per finished image."""
        with writing(self.lines, "--out"):
            return open(self.lines, "a", encoding="utf-8")

    def name_for(self, path: Path) -> str:
        """The file stem of an image's outputs: its own stem, numbered when another image had it."""
        return _unique_name(path.stem, self._names)

    def write_overlay(
        self, name: str, image: Image.Image, found: dict[str, Detections], exemplars: list
    ) -> str:
        """Write ``overlays/<name>.png``; its path in the folder."""
        relative = f"overlays/{name}.png"
        with writing(self.path / relative, "--out"):
            draw_overlay(image, list(found.items()), exemplars=exemplars).save(self.path / relative)
        return relative

    def write_label_map(self, name: str, labels: np.ndarray, prompts: list[str]) -> str:
        """Write ``semantic/<name>.png`` (8-bit, 16-bit from 256 prompts on); its path in the folder."""
        mode, dtype = ("L", np.uint8) if len(prompts) < 256 else ("I;16", np.uint16)
        relative = f"semantic/{name}.png"
        with writing(self.path / relative, "--out"):
            Image.fromarray(labels.astype(dtype), mode=mode).save(self.path / relative)
        return relative

    def finish(
        self,
        done: PredictedFiles,
        prompts: list[str],
        boxes: Sequence[Sequence[float]],
        negative_boxes: Sequence[Sequence[float]],
    ) -> None:
        """``predictions.json`` and ``index.json`` of what is done; the journal is removed after."""
        save_coco_results(done.results, self.path / "predictions.json")
        index = {
            "images": done.images,
            "categories": [{"id": i, "name": p} for i, p in enumerate(prompts, 1)],
            "exemplars": {
                "positive": [list(b) for b in boxes],
                "negative": [list(b) for b in negative_boxes],
            },
            "prompts_cut": done.prompts_cut,
            "skipped": done.skipped,
            "complete": done.complete,
        }
        write_text_atomic(self.path / "index.json", json.dumps(index, indent=2))
        self.lines.unlink(missing_ok=True)  # everything it held is in predictions.json now


@dataclass
class PredictedFiles:
    """What :meth:`Predictor.predict_files` wrote to ``out_dir``: the COCO ``results``, the ``images``
    entries of ``index.json``, the files ``skipped`` (``file_name``, ``reason``), whether it finished, the
    prompts the tokenizer cut (prompt -> tokens kept)."""

    out_dir: Path
    prompts_cut: dict[str, int] = field(default_factory=dict)
    results: list[dict] = field(default_factory=list)
    images: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    complete: bool = False


def collect_images(paths: Sequence[str | Path]) -> list[Path]:
    """Image files named directly, plus the image files (by suffix, sorted) of named folders."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        with on_path(path, "read", "IMAGE_OR_DIR"):
            found += _image_files(path)
    if not found:
        raise UserError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {', '.join(map(str, paths))}")
    return found


def _image_files(path: Path) -> list[Path]:
    """``path`` (an image file), or the image files of folder ``path`` by suffix, sorted."""
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if path.is_file():
        return [path]
    raise UserError(f"{path}: no such image file or folder", path=path)


class BoxOutsideImage(ConfigError):
    """An exemplar box with nothing inside the image it is asked on (``predict_files`` skips that image)."""


def exemplar_tensors(
    boxes: Sequence[Sequence[float]], negative_boxes: Sequence[Sequence[float]], width: int, height: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exemplar boxes in xyxy pixels of a ``width x height`` image -> ``(k, 4)`` cxcywh in [0, 1] of the
    evaluation canvas (a plain resize) and ``(k,)`` labels (1 for ``boxes``, 0 for ``negative_boxes``).

    Boxes are clipped to the image; one with nothing left is a :class:`BoxOutsideImage`, one that is not 4
    finite numbers a ``ConfigError``."""
    rows = []
    for box in [*boxes, *negative_boxes]:
        values = [float(v) for v in box]
        if len(values) != 4 or not all(map(torch.isfinite, torch.tensor(values))):
            raise ConfigError(f"an exemplar box must be 4 finite numbers x0,y0,x1,y1, got {list(box)!r}")
        x0, x1 = (min(max(v, 0.0), width) for v in values[0::2])
        y0, y1 = (min(max(v, 0.0), height) for v in values[1::2])
        if x1 <= x0 or y1 <= y0:
            raise BoxOutsideImage(
                f"exemplar box {values} has nothing inside the {width}x{height} image (clipped to it, it "
                "needs x0 < x1 and y0 < y1)",
                key="boxes",
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
        raise ConfigError(
            f"give at least one non-empty prompt or a positive exemplar box, got prompts {prompts!r}"
        )
    same: dict[str, list[str]] = {}
    for prompt in prompts:
        same.setdefault(prompt_key(prompt), []).append(prompt)
    repeated = [group for group in same.values() if len(group) > 1]
    if repeated:
        raise ConfigError(
            f"prompts repeat once case, punctuation and spacing are ignored: {_groups(repeated)}; they ask "
            "for the same thing (each would count as the other's false positives): give each prompt once",
            key="prompts",
        )
    return prompts


def _groups(groups: list[list[str]]) -> str:
    """``'a' and 'b'; 'c' and 'd'``: prompts that are one prompt to the model, group by group."""
    return "; ".join(" and ".join(repr(p) for p in group) for group in groups)


def _unique_name(stem: str, used: set[str]) -> str:
    name, k = stem, 1
    while name in used:
        k += 1
        name = f"{stem}_{k}"
    used.add(name)
    return name
