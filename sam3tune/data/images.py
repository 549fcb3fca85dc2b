"""Reading image files: probe (real size after EXIF orientation, truncation and corruption checks) and
decode to RGB, reduced early for large images."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from sam3tune.errors import UserError

_EXIF_ORIENTATION = 0x0112
_TRANSPOSED_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that swap width and height
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_REDUCIBLE_MODES = ("RGB", "RGBA", "L", "LA")
LARGE_IMAGE_PIXELS = 20_000_000
"""Images above this many pixels are reported (``image_large``) and reduced before resizing."""
ZERO_RUN_BYTES = 4096
"""A run of this many zero bytes inside JPEG scan data marks a file whose end was never written
(Huffman-coded data of a real image does not hold such runs)."""


class ImageFileError(UserError):
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
    orientation: int = 1
    """EXIF orientation tag (1 = as stored; 2-4 flip or turn 180 degrees; 5-8 swap width and height)."""

    @property
    def needs_conversion(self) -> bool:
        """True when decoding converts the pixels to RGB (grayscale, alpha, palette, 16-bit, CMYK)."""
        return self.mode != "RGB"


def probe_image(path: Path) -> ImageInfo:
    """Read the header of ``path`` and decode it once to catch truncated files.

    TIFFs that ``tifffile`` reads by window (:mod:`sam3tune.data.regions`) are checked from their header
    (every strip or tile inside the file), without decoding: they may be of any size.
    JPEGs are verified with a 1/8-scale DCT decode (reads the whole entropy stream, a few ms) and a
    scan of their marker structure (:func:`jpeg_damage`), which catches corrupt files that still decode;
    PNGs above :data:`LARGE_IMAGE_PIXELS` by their chunk checksums (not decoded); others by a decode.
    Raises :class:`ImageFileError` with kind ``image_missing``, ``image_unreadable``, ``image_truncated``
    or ``image_corrupt``.
    """
    if not path.is_file():
        raise ImageFileError("image_missing", f"{path}: file not found")
    from sam3tune.data.regions import probe_tiff  # regions reads through this module

    tiff = probe_tiff(path)
    if tiff is not None:
        return tiff
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
                mode, fmt = img.mode, img.format
                if fmt == "PNG" and width * height > LARGE_IMAGE_PIXELS:
                    # Pillow decodes a PNG to find EXIF after the pixels: read only an early eXIf chunk,
                    # and check the chunk checksums to the end without holding the pixels in memory.
                    orientation = _early_png_orientation(img)
                    img.verify()
                else:
                    orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
                    if fmt == "JPEG":
                        img.draft(mode, (max(1, width // 8), max(1, height // 8)))
                    img.load()
                if orientation in _TRANSPOSED_ORIENTATIONS:
                    width, height = height, width
    except OSError as err:
        kind = "image_truncated" if "truncated" in str(err).lower() else "image_unreadable"
        raise ImageFileError(kind, f"{path}: {err}") from err
    except (SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ImageFileError("image_unreadable", f"{path}: {err}") from err
    if fmt == "JPEG":
        damage = jpeg_damage(path.read_bytes())
        if damage:
            raise ImageFileError("image_corrupt", f"{path}: {damage}")
    if not isinstance(orientation, int) or not 1 <= orientation <= 8:
        orientation = 1  # PIL's exif_transpose ignores such values as well
    return ImageInfo(width=width, height=height, mode=mode, format=fmt, orientation=orientation)


def _early_png_orientation(img: Image.Image) -> int:
    """The EXIF orientation of an eXIf chunk Pillow met before the pixel data (1 without one)."""
    raw = img.info.get("exif")
    if not raw:
        return 1
    exif = Image.Exif()
    exif.load(raw)
    return exif.get(_EXIF_ORIENTATION, 1)


def jpeg_damage(data: bytes) -> str | None:
    """What is structurally wrong with a JPEG file's bytes, or None.

    Checked: every marker segment is where its predecessor's length says; inside scan data, 0xFF is
    followed only by a stuffed 0x00 or restart markers in order; the file ends with an end-of-image
    marker; no run of :data:`ZERO_RUN_BYTES` zero bytes (an unwritten tail) inside scan data. libjpeg
    decodes such files with grey or smeared blocks and only a warning Pillow does not pass on.
    Bit errors inside Huffman data that break none of these rules are not seen.
    """
    if data[:2] != b"\xff\xd8":
        return "does not start with a JPEG start-of-image marker"
    pos, size = 2, len(data)
    while True:
        if pos + 1 >= size:
            return "ends without an end-of-image marker (truncated or partly written)"
        if data[pos] != 0xFF:
            return f"extraneous bytes where a marker should start, at byte {pos}"
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xD9:
            return None
        if marker in (0x01, *range(0xD0, 0xD8)):
            pos += 2
            continue
        if pos + 3 >= size:
            return "ends inside a marker segment (truncated)"
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker == 0xDA:
            pos, damage = _skip_scan_data(data, pos)
            if damage:
                return damage


def _skip_scan_data(data: bytes, pos: int) -> tuple[int, str | None]:
    """Walk entropy-coded data from ``pos`` to the next marker that is not a restart; returns its
    position, or a description of the damage found."""
    expected_restart = 0
    start = pos
    while True:
        found = data.find(b"\xff", pos)
        if found < 0 or found + 1 >= len(data):
            return len(data), None  # the caller reports the missing end-of-image marker
        follower = data[found + 1]
        if follower == 0x00 or follower == 0xFF:
            pos = found + 1 if follower == 0xFF else found + 2
            continue
        if 0xD0 <= follower <= 0xD7:
            if follower - 0xD0 != expected_restart:
                return (
                    found,
                    f"restart marker {follower - 0xD0} where {expected_restart} was due at byte {found}",
                )
            expected_restart = (expected_restart + 1) % 8
            pos = found + 2
            continue
        zeros = data.find(bytes(ZERO_RUN_BYTES), start, found)
        if zeros >= 0:
            return (
                found,
                f"{ZERO_RUN_BYTES}+ zero bytes inside the image data at byte {zeros} (partly written file)",
            )
        return found, None


def oriented_size(img: Image.Image) -> tuple[int, int]:
    """``(width, height)`` of an opened image after EXIF orientation (read from the header only)."""
    width, height = img.size
    if img.getexif().get(_EXIF_ORIENTATION, 1) in _TRANSPOSED_ORIENTATIONS:
        return height, width
    return width, height


def read_rgb(path: Path, at_least: int | None = None) -> Image.Image:
    """Decode ``path`` as an 8-bit RGB image, EXIF orientation applied.

    Grayscale, alpha (dropped), palette and CMYK images are converted; 16-bit images are scaled
    from [0, 65535] to [0, 255]. With ``at_least`` a JPEG may be decoded at a reduced DCT scale, and
    an image above :data:`LARGE_IMAGE_PIXELS` of another format reduced by an integer factor, with
    sides still >= ``at_least`` (faster; callers then resize to that side or below). TIFFs that
    ``tifffile`` reads by window are read in bands (:mod:`sam3tune.data.regions`).
    """
    from sam3tune.data.regions import TiffRegions, is_tiff  # regions reads through this module

    tiff = TiffRegions.open(path) if is_tiff(path) else None
    if tiff is not None:
        with tiff:
            if at_least is not None and tiff.size[0] * tiff.size[1] > LARGE_IMAGE_PIXELS:
                return tiff.overview(at_least)
            return tiff.read((0, 0, *tiff.size))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(path) as img:
            if at_least is not None and img.format == "JPEG":
                img.draft("RGB", (at_least, at_least))
            img.load()
            if at_least is not None and img.width * img.height > LARGE_IMAGE_PIXELS:
                img = _reduced(img, at_least)
            oriented = ImageOps.exif_transpose(img)
    return to_rgb(oriented)


def _reduced(img: Image.Image, at_least: int) -> Image.Image:
    """A large decoded image shrunk by an integer factor (box filter) keeping both sides >= ``at_least``:
    the later resize and RGB conversion then work on a fraction of the pixels."""
    factor = min(img.size) // max(at_least, 1)
    if factor < 2:
        return img
    if img.mode not in _REDUCIBLE_MODES:
        img = to_rgb(img)
    return img.reduce(factor)


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
