"""Reading image files: probe (real size after EXIF orientation, truncation check) and decode to RGB."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

_EXIF_ORIENTATION = 0x0112
_TRANSPOSED_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that swap width and height
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


class ImageFileError(Exception):
    """An image file that cannot be used; ``kind`` is a problem kind of the catalogue."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class ImageInfo:
    """What probing a file found: the size after EXIF orientation, the stored PIL mode and format."""

    width: int
    height: int
    mode: str
    format: str | None

    @property
    def needs_conversion(self) -> bool:
        """True when decoding converts the pixels to RGB (grayscale, alpha, palette, 16-bit, CMYK)."""
        return self.mode != "RGB"


def probe_image(path: Path) -> ImageInfo:
    """Read the header of ``path`` and decode it once to catch truncated files.

    JPEGs are verified with a 1/8-scale DCT decode (reads the whole entropy stream, a few ms).
    Raises :class:`ImageFileError` with kind ``image_missing``, ``image_unreadable`` or ``image_truncated``.
    """
    if not path.is_file():
        raise ImageFileError("image_missing", f"{path}: file not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = oriented_size(img)
                mode, fmt = img.mode, img.format
                if fmt == "JPEG":
                    img.draft(mode, (max(1, img.size[0] // 8), max(1, img.size[1] // 8)))
                img.load()
    except OSError as err:
        kind = "image_truncated" if "truncated" in str(err).lower() else "image_unreadable"
        raise ImageFileError(kind, f"{path}: {err}") from err
    except (SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ImageFileError("image_unreadable", f"{path}: {err}") from err
    return ImageInfo(width=width, height=height, mode=mode, format=fmt)


def oriented_size(img: Image.Image) -> tuple[int, int]:
    """``(width, height)`` of an opened image after EXIF orientation (read from the header only)."""
    width, height = img.size
    if img.getexif().get(_EXIF_ORIENTATION, 1) in _TRANSPOSED_ORIENTATIONS:
        return height, width
    return width, height


def read_rgb(path: Path, at_least: int | None = None) -> Image.Image:
    """Decode ``path`` as an 8-bit RGB image, EXIF orientation applied.

    Grayscale, alpha (dropped), palette and CMYK images are converted; 16-bit images are scaled
    from [0, 65535] to [0, 255]. With ``at_least`` a JPEG may be decoded at a reduced DCT scale
    whose sides are still >= ``at_least`` (faster; callers then resize to that side or below).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(path) as img:
            if at_least is not None and img.format == "JPEG":
                img.draft("RGB", (at_least, at_least))
            img.load()
            oriented = ImageOps.exif_transpose(img)
    return to_rgb(oriented)


def to_rgb(img: Image.Image) -> Image.Image:
    """``img`` as 8-bit RGB (see :func:`read_rgb` for the conversions)."""
    if img.mode == "RGB":
        return img
    if img.mode in _SIXTEEN_BIT_MODES:
        values = np.asarray(img, dtype=np.float64)
        gray = np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(np.repeat(gray[:, :, None], 3, axis=2))
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    return img.convert("RGB")
