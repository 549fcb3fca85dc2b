"""Drawing detections on an image: translucent masks, box outlines, ``prompt score`` labels, and the
exemplar (box-prompt) boxes as black-and-white double outlines labelled ``exemplar +`` / ``exemplar -``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from sam3tune.eval.postprocess import Detections

# Distinct, saturated colours (one per prompt, cycling).
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75),
    (60, 180, 75),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (0, 128, 128),
    (170, 110, 40),
)


def prompt_colour(index: int) -> tuple[int, int, int]:
    """The colour of the ``index``-th prompt."""
    return PALETTE[index % len(PALETTE)]


def draw_overlay(
    image: Image.Image,
    predictions: Sequence[tuple[str, Detections]],
    mask_alpha: float = 0.5,
    exemplars: Sequence[tuple[Sequence[float], bool]] = (),
) -> Image.Image:
    """A copy of ``image`` (RGB, same size) with every detection drawn.

    Args:
        image: the original image.
        predictions: ``(prompt, detections)`` per prompt, in prompt order (which picks the colour);
            detections are in the image's pixels (see :class:`~sam3tune.eval.postprocess.Detections`).
        mask_alpha: opacity of the mask colour.
        exemplars: ``(xyxy box in the image's pixels, positive)`` of each exemplar box prompt.
    """
    canvas = np.asarray(image.convert("RGB"), dtype=np.float32).copy()
    for index, (_, detections) in enumerate(predictions):
        if detections.masks is None or len(detections) == 0:
            continue
        if tuple(detections.image_size) != (image.height, image.width):
            raise ValueError(
                f"detections for image size {detections.image_size}, not {(image.height, image.width)}"
            )
        covered = detections.mask_array().any(axis=0)
        colour = np.asarray(prompt_colour(index), dtype=np.float32)
        canvas[covered] = (1 - mask_alpha) * canvas[covered] + mask_alpha * colour
    out, draw, line, font = _drawable(canvas)
    for index, (prompt, detections) in enumerate(predictions):
        colour = prompt_colour(index)
        for box, score in zip(detections.boxes.tolist(), detections.scores.tolist(), strict=True):
            _draw_labelled_box(draw, box, f"{prompt} {score:.2f}", colour, line, font)
    for box, positive in exemplars:
        _draw_exemplar(draw, [float(v) for v in box], positive, line, font)
    return out


def _draw_exemplar(draw: ImageDraw.ImageDraw, box: list[float], positive: bool, line: int, font) -> None:
    """A white outline inside a black one (visible on any background and unlike the prompt colours),
    labelled ``exemplar +`` (positive, white label) or ``exemplar -`` (negative, black label)."""
    x0, y0, x1, y1 = box
    draw.rectangle((x0 - line, y0 - line, x1 + line, y1 + line), outline=(0, 0, 0), width=line)
    draw.rectangle((x0, y0, x1, y1), outline=(255, 255, 255), width=line)
    label = "exemplar +" if positive else "exemplar -"
    background, text = ((255, 255, 255), (0, 0, 0)) if positive else ((0, 0, 0), (255, 255, 255))
    left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
    y = y1 + 2 * line
    draw.rectangle((x0, y, x0 + right - left + 2 * line, y + bottom - top + 2 * line), fill=background)
    draw.text((x0 + line - left, y + line - top), label, fill=text, font=font)


def draw_tracks(
    image: Image.Image,
    tracks: Sequence[tuple[int, str, np.ndarray, Sequence[float]]],
    mask_alpha: float = 0.5,
) -> Image.Image:
    """A copy of ``image`` (RGB) with tracked objects drawn: ``(track id, label, mask (H, W) bool, xyxy
    box)`` each, in the colour of its track id (the same colour on every frame), its box outlined and
    labelled ``<id> <label>``."""
    canvas = np.asarray(image.convert("RGB"), dtype=np.float32).copy()
    for track_id, _, mask, _ in tracks:
        colour = np.asarray(prompt_colour(track_id), dtype=np.float32)
        canvas[mask] = (1 - mask_alpha) * canvas[mask] + mask_alpha * colour
    out, draw, line, font = _drawable(canvas)
    for track_id, label, _, box in tracks:
        x0, y0, x1, y1 = (float(v) for v in box)
        _draw_labelled_box(
            draw, [x0, y0, x1 - 1, y1 - 1], f"{track_id} {label}", prompt_colour(track_id), line, font
        )
    return out


def _drawable(
    canvas: np.ndarray,
) -> tuple[Image.Image, ImageDraw.ImageDraw, int, ImageFont.FreeTypeFont | ImageFont.ImageFont]:
    """``canvas`` (H, W, 3) float as an image to draw on, with a line width and a font scaled to its size."""
    out = Image.fromarray(canvas.round().clip(0, 255).astype(np.uint8))
    short_side = min(out.width, out.height)
    font = ImageFont.load_default(size=max(10, short_side // 40))
    return out, ImageDraw.Draw(out), max(1, short_side // 300), font


def _draw_labelled_box(
    draw: ImageDraw.ImageDraw, box: list[float], label: str, colour: tuple[int, int, int], line: int, font
) -> None:
    """``box`` (x0, y0, x1, y1) outlined in ``colour``, ``label`` in white on a ``colour`` tab above it."""
    draw.rectangle(box, outline=colour, width=line)
    left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
    x, y = box[0], max(0.0, box[1] - (bottom - top) - 2 * line)
    draw.rectangle((x, y, x + right - left + 2 * line, y + bottom - top + 2 * line), fill=colour)
    draw.text((x + line - left, y + line - top), label, fill=(255, 255, 255), font=font)
