"""Reading a window of an image file without decoding, or holding, more of it than needed.

A *window* is ``(left, top, right, bottom)`` in pixels of the image after EXIF orientation (right and
bottom exclusive). Two readers sit behind :func:`open_regions`:

- **TIFF** (plain, tiled and BigTIFF; read with ``tifffile``): only the strips or tiles that overlap the
  window are read from the file and decoded, so a tile of a 20,000 x 20,000 tiled TIFF costs a few tiles
  of memory. 8- and 16-bit grey, grey + alpha, RGB and RGBA pixels, stored contiguously (the common
  layout); uncompressed, deflate and PackBits TIFFs need nothing else, LZW, JPEG and the other codecs
  the ``imagecodecs`` package (``pip install sam3tune[tiff]``). Georeferencing tags are not read (the
  pixels are, in pixel coordinates). Other TIFFs (palette, planar, float, an orientation other than 1,
  or a codec without ``imagecodecs``) go to Pillow.
- **Everything else** (JPEG, PNG, ...; Pillow): decoded whole as 8-bit pixels (never as floats) once
  per reader, then cropped; a JPEG read for a smaller output is decoded at a reduced DCT scale
  (``draft``). Pillow refuses images above its decompression-bomb limit (179 megapixels): larger images
  must come as TIFF.

Every reader returns 8-bit RGB ``PIL.Image`` windows, converted as :func:`sam3tune.data.images.to_rgb`
does (grey, alpha dropped, 16-bit scaled by 1/257).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from sam3tune.data.images import ImageFileError, ImageInfo, to_rgb

Window = tuple[int, int, int, int]
"""``(left, top, right, bottom)`` pixels, right and bottom exclusive."""

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF, both byte orders
_CONTIGUOUS = 1  # TIFF PlanarConfiguration: samples of a pixel stored together
_MINISWHITE = 0  # TIFF Photometric: 0 is white
_SUPPORTED_PHOTOMETRIC = (0, 1, 2, 6)  # white-is-zero, black-is-zero, RGB, YCbCr (decoded to RGB by JPEG)


def is_tiff(path: Path) -> bool:
    """True when ``path`` starts with a TIFF or BigTIFF signature."""
    try:
        with open(path, "rb") as handle:
            return handle.read(4) in _TIFF_MAGIC
    except OSError:
        return False


def open_regions(path: str | Path) -> ImageRegions:
    """A window reader for ``path`` (see the module docstring); use it as a context manager."""
    path = Path(path)
    if is_tiff(path):
        reader = TiffRegions.open(path)
        if reader is not None:
            return reader
    return PillowRegions(path)


def probe_tiff(path: Path) -> ImageInfo | None:
    """The size and pixel mode of a TIFF that :class:`TiffRegions` reads, checked from its header only
    (every strip or tile must lie inside the file, else ``image_truncated``); None for other files."""
    if not is_tiff(path):
        return None
    reader = TiffRegions.open(path)
    if reader is None:
        return None
    with reader:
        page = reader._page
        file_size = path.stat().st_size
        ends = np.asarray(page.dataoffsets, dtype=np.int64) + np.asarray(page.databytecounts, dtype=np.int64)
        if len(ends) and int(ends.max()) > file_size:
            raise ImageFileError(
                "image_truncated", f"{path}: TIFF pixel data ends past the end of the file (truncated)"
            )
        samples, sixteen = int(page.samplesperpixel), np.dtype(page.dtype) == np.dtype(np.uint16)
        mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[samples]
        if sixteen:
            mode = "I;16" if samples == 1 else f"{mode};16"
        return ImageInfo(width=reader.size[0], height=reader.size[1], mode=mode, format="TIFF")


def read_window(path: str | Path, window: Window, at_least: int | None = None) -> Image.Image:
    """The RGB pixels of ``window`` of the image file ``path``; with ``at_least`` the result may be
    reduced (by a whole factor) as long as both its sides stay >= ``at_least`` (callers then resize)."""
    with open_regions(path) as reader:
        return reader.read(window, at_least)


class ImageRegions:
    """A window reader: ``size`` is ``(width, height)`` after orientation; ``read(window)`` returns RGB."""

    path: Path
    size: tuple[int, int]

    def read(self, window: Window, at_least: int | None = None) -> Image.Image:
        raise NotImplementedError

    def overview(self, at_least: int) -> Image.Image:
        """The whole image as RGB, reduced by a whole factor while both sides stay >= ``at_least``."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the file and any decoded pixels."""

    def __enter__(self) -> ImageRegions:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check(self, window: Window) -> Window:
        left, top, right, bottom = (int(v) for v in window)
        width, height = self.size
        if not (0 <= left < right <= width and 0 <= top < bottom <= height):
            raise ValueError(f"{self.path}: window {window} is not inside the {width}x{height} image")
        return left, top, right, bottom


class PillowRegions(ImageRegions):
    """Pillow: the file is decoded once (8-bit, EXIF orientation applied; a JPEG at the coarsest DCT scale
    that the reads allow), windows are crops of it."""

    def __init__(self, path: Path):
        self.path = path
        self._decoded: Image.Image | None = None
        self._factor = 1  # the decoded image is the original reduced by up to this factor
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
                if img.getexif().get(0x0112, 1) in (5, 6, 7, 8):
                    width, height = height, width
        self.size = (width, height)

    @classmethod
    def of(cls, image: Image.Image) -> PillowRegions:
        """A reader over an image already decoded (EXIF orientation as it is)."""
        reader = cls.__new__(cls)
        reader.path = Path("<image>")
        reader._decoded, reader._factor = to_rgb(image), 1
        reader.size = image.size
        return reader

    def _decode(self, factor: int) -> Image.Image:
        """The whole image reduced by at most ``factor`` (decoded again only when the one held is
        coarser)."""
        if self._decoded is not None and self._factor <= factor:
            return self._decoded
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(self.path) as img:
                if factor > 1 and img.format == "JPEG":
                    img.draft("RGB", (math.ceil(img.width / factor), math.ceil(img.height / factor)))
                img.load()
                oriented = ImageOps.exif_transpose(img)
        self._decoded = to_rgb(oriented)
        self._factor = factor
        return self._decoded

    def read(self, window: Window, at_least: int | None = None) -> Image.Image:
        left, top, right, bottom = self._check(window)
        factor = 1 if at_least is None else max(1, min(right - left, bottom - top) // max(at_least, 1))
        image = self._decode(factor)
        if image.size == self.size:
            return image.crop((left, top, right, bottom))
        sx, sy = image.width / self.size[0], image.height / self.size[1]
        box = (round(left * sx), round(top * sy), round(right * sx), round(bottom * sy))
        return image.crop((box[0], box[1], max(box[2], box[0] + 1), max(box[3], box[1] + 1)))

    def overview(self, at_least: int) -> Image.Image:
        factor = max(1, min(self.size) // max(at_least, 1))
        image = self._decode(factor)
        remaining = max(1, min(image.size) // max(at_least, 1))
        return image.reduce(remaining) if remaining > 1 else image

    def close(self) -> None:
        self._decoded = None


class TiffRegions(ImageRegions):
    """tifffile: windows assembled from the strips or tiles that overlap them (first page = full
    resolution)."""

    def __init__(self, path: Path, tiff: Any):
        self.path = path
        self._tiff = tiff
        self._page = tiff.pages[0]
        page = self._page
        self.size = (int(page.imagewidth), int(page.imagelength))
        if page.is_tiled:
            self._chunk = (int(page.tilelength), int(page.tilewidth))
        else:
            self._chunk = (
                min(int(page.rowsperstrip or page.imagelength), int(page.imagelength)),
                self.size[0],
            )
        self._chunks_across = math.ceil(self.size[0] / self._chunk[1])

    @classmethod
    def open(cls, path: Path) -> TiffRegions | None:
        """The reader, or None when the file is a TIFF layout that Pillow should read instead."""
        import tifffile

        try:
            tiff = tifffile.TiffFile(path)
        except (tifffile.TiffFileError, ValueError, OSError):
            return None
        page = tiff.pages[0]
        samples = int(page.samplesperpixel)
        try:
            tifffile.TIFF.DECOMPRESSORS[page.compression]
            decodable = True
        except KeyError:  # LZW, JPEG, ... without the imagecodecs package
            decodable = False
        supported = (
            decodable
            and page.dtype is not None
            and np.dtype(page.dtype) in (np.dtype(np.uint8), np.dtype(np.uint16))
            and (samples == 1 or int(page.planarconfig) == _CONTIGUOUS)
            and samples in (1, 2, 3, 4)
            and int(page.photometric) in _SUPPORTED_PHOTOMETRIC
            and int(getattr(page, "orientation", 1) or 1) == 1
            and int(page.imagedepth) == 1
        )
        if not supported:
            tiff.close()
            return None
        return cls(path, tiff)

    def read(self, window: Window, at_least: int | None = None) -> Image.Image:
        left, top, right, bottom = self._check(window)
        page = self._page
        samples = int(page.samplesperpixel)
        out = np.zeros((bottom - top, right - left, samples), dtype=page.dtype)
        rows, cols = self._chunk
        handle = self._tiff.filehandle
        for chunk_y in range(top // rows, (bottom - 1) // rows + 1):
            for chunk_x in range(left // cols, (right - 1) // cols + 1):
                index = chunk_y * self._chunks_across + chunk_x
                count = int(page.databytecounts[index])
                if count == 0:  # a sparse file's empty chunk: zeros
                    continue
                handle.seek(int(page.dataoffsets[index]))
                data = handle.read(count)
                if len(data) != count:
                    raise OSError(f"{self.path}: truncated (chunk {index} ends past the end of the file)")
                segment, _, _ = page.decode(data, index, jpegtables=page.jpegtables)
                segment = np.asarray(segment).reshape(-1, *segment.shape[-3:])[0]  # (rows, cols, samples)
                y0, x0 = chunk_y * rows, chunk_x * cols
                ys = slice(max(top, y0), min(bottom, y0 + segment.shape[0]))
                xs = slice(max(left, x0), min(right, x0 + segment.shape[1]))
                out[ys.start - top : ys.stop - top, xs.start - left : xs.stop - left] = segment[
                    ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0
                ]
        return _tiff_rgb(out, int(page.photometric))

    def overview(self, at_least: int) -> Image.Image:
        """Read in bands of chunk rows, each reduced before the next is read (memory: one band)."""
        width, height = self.size
        factor = max(1, min(self.size) // max(at_least, 1))
        band = factor * max(1, math.ceil(self._chunk[0] / factor))  # whole chunks' rows, a multiple of factor
        parts = []
        for top in range(0, height, band):
            bottom = min(height, top + band)
            part = self.read((0, top, width, bottom))
            parts.append(part.reduce(factor) if factor > 1 else part)
        result = Image.new("RGB", (parts[0].width, sum(p.height for p in parts)))
        y = 0
        for part in parts:
            result.paste(part, (0, y))
            y += part.height
        return result

    def close(self) -> None:
        self._tiff.close()


def _tiff_rgb(pixels: np.ndarray, photometric: int) -> Image.Image:
    """``(h, w, samples)`` uint8/uint16 TIFF pixels -> 8-bit RGB (alpha dropped, 16-bit / 257)."""
    if pixels.dtype == np.uint16:
        pixels = np.clip(np.rint(pixels / 257.0), 0, 255).astype(np.uint8)
    if photometric == _MINISWHITE:
        pixels = 255 - pixels
    if pixels.shape[2] <= 2:  # grey (+ alpha)
        pixels = np.repeat(pixels[:, :, :1], 3, axis=2)
    return Image.fromarray(np.ascontiguousarray(pixels[:, :, :3]), mode="RGB")
