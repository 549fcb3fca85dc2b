"""Reading windows of image files: TIFF (tiled, stripped, BigTIFF, 16-bit) by the chunks a window needs,
other formats through Pillow; memory bounded by the window, not the image."""

from __future__ import annotations

import itertools
import json
import tracemalloc

import numpy as np
import pytest
import tifffile
from PIL import Image

from sam3tune.data import DataError, load_split, resolve_split
from sam3tune.data.images import read_rgb
from sam3tune.data.regions import PillowRegions, TiffRegions, open_regions, read_window

WINDOWS = [(0, 0, 64, 64), (37, 45, 301, 290), (436, 236, 500, 300), (499, 0, 500, 1)]


@pytest.fixture(scope="module")
def pixels() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(300, 500, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    "options",
    [
        {"tile": (64, 64), "compression": "zlib"},
        {"tile": (48, 80)},
        {"rowsperstrip": 16},
        {"rowsperstrip": 7, "compression": "zlib"},
        {"tile": (64, 64), "bigtiff": True},
    ],
)
def test_tiff_windows_equal_the_array(tmp_path, pixels, options):
    path = tmp_path / "image.tif"
    tifffile.imwrite(path, pixels, photometric="rgb", **options)
    with open_regions(path) as reader:
        assert isinstance(reader, TiffRegions) and reader.size == (500, 300)
        for left, top, right, bottom in WINDOWS:
            window = np.asarray(reader.read((left, top, right, bottom)))
            np.testing.assert_array_equal(window, pixels[top:bottom, left:right])
        overview = reader.overview(60)
    assert overview.size == (100, 60)  # reduced 5x: both sides stay >= 60
    expected = np.asarray(Image.fromarray(pixels).reduce(5))
    np.testing.assert_array_equal(np.asarray(overview), expected)


def test_tiff_grey_sixteen_bit_and_alpha_become_rgb(tmp_path, pixels):
    grey16 = pixels[:, :, 0].astype(np.uint16) * 257
    tifffile.imwrite(tmp_path / "g.tif", grey16, tile=(32, 32))
    got = np.asarray(read_window(tmp_path / "g.tif", (10, 20, 90, 70)))
    np.testing.assert_array_equal(got, np.repeat(pixels[20:70, 10:90, :1], 3, axis=2))
    rgba = np.concatenate([pixels, np.full((300, 500, 1), 7, np.uint8)], axis=2)
    tifffile.imwrite(tmp_path / "a.tif", rgba, tile=(64, 64), photometric="rgb", extrasamples=["unassalpha"])
    np.testing.assert_array_equal(
        np.asarray(read_window(tmp_path / "a.tif", WINDOWS[1])), pixels[45:290, 37:301]
    )


def test_other_formats_read_through_pillow(tmp_path, pixels):
    Image.fromarray(pixels).save(tmp_path / "p.png")
    with open_regions(tmp_path / "p.png") as reader:
        assert isinstance(reader, PillowRegions)
        for left, top, right, bottom in WINDOWS:
            np.testing.assert_array_equal(
                np.asarray(reader.read((left, top, right, bottom))), pixels[top:bottom, left:right]
            )
    # EXIF orientation applied before the window is cut (6 = turned: stored 300 wide, shown 500 wide)
    stored = np.ascontiguousarray(np.rot90(pixels, k=1))  # what a camera turned 90 degrees stores
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "r.jpg", exif=exif, quality=100, subsampling=0)
    shown = np.asarray(read_rgb(tmp_path / "r.jpg"))
    assert shown.shape == (500, 300, 3) or shown.shape == (300, 500, 3)
    window = np.asarray(read_window(tmp_path / "r.jpg", (10, 20, 110, 70)))
    np.testing.assert_array_equal(window, shown[20:70, 10:110])
    # a JPEG read for a small output is decoded at a reduced DCT scale: the window shrinks by that factor
    Image.fromarray(pixels).save(tmp_path / "q.jpg", quality=95)
    reduced = read_window(tmp_path / "q.jpg", (0, 0, 400, 240), at_least=100)
    assert reduced.size == (200, 120)  # 1/2 scale: both sides of the 400 x 240 window stay >= 100
    with pytest.raises(ValueError, match="not inside"):
        read_window(tmp_path / "q.jpg", (0, 0, 501, 10))


def test_reading_a_window_of_a_large_tiled_tiff_holds_only_the_window(tmp_path):
    """A 6000 x 6000 RGB TIFF (108 MB of pixels) in 256 px tiles: a 256 px window allocates about
    the tiles it touches, a fraction of a megabyte per tile, never the image."""
    side, tile = 6000, 256
    rng = np.random.default_rng(0)
    block = rng.integers(0, 256, size=(tile, tile, 3), dtype=np.uint8)

    path = tmp_path / "big.tif"
    tifffile.imwrite(
        path,
        itertools.repeat(block),
        shape=(side, side, 3),
        dtype=np.uint8,
        tile=(tile, tile),
        compression="zlib",
    )
    tracemalloc.start()
    try:
        with open_regions(path) as reader:
            window = reader.read((3000, 3000, 3256, 3256))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert window.size == (256, 256)
    # 4 tiles touched (3000 is not a multiple of 256): 4 x 196 KB decoded + the 196 KB window
    assert peak < 4 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB"
    np.testing.assert_array_equal(
        np.asarray(window)[:10, :10], block[3000 % tile : 3000 % tile + 10, 3000 % tile : 3000 % tile + 10]
    )


def test_large_tiff_is_usable_data_without_a_full_decode(tmp_path):
    """A 14,000 x 13,000 tiled TIFF (546 MB of pixels, above Pillow's 179-megapixel limit) is probed
    from its header: usable, reported as large, and a truncated copy is refused."""
    width, height, tile = 14000, 13000, 512
    folder = tmp_path / "train"
    folder.mkdir()
    path = folder / "scene.tif"
    tifffile.imwrite(
        path,
        itertools.repeat(np.zeros((tile, tile, 3), dtype=np.uint8)),
        shape=(height, width, 3),
        dtype=np.uint8,
        tile=(tile, tile),
        compression="zlib",
        compressionargs={"level": 1},
    )
    coco = {
        "images": [{"id": 1, "file_name": "scene.tif", "width": width, "height": height}],
        "categories": [{"id": 1, "name": "car"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [100, 100, 20, 10], "iscrowd": 0}],
    }
    (folder / "_annotations.coco.json").write_text(json.dumps(coco))
    split = load_split(resolve_split(tmp_path, "train"), progress=False)
    assert [(i.width, i.height) for i in split.images] == [(width, height)]
    assert split.problems["image_large"] == 1
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="none of the 1 images") as caught:
        load_split(resolve_split(tmp_path, "train"), progress=False)
    assert caught.value.kind == "no_usable_images" and "image_truncated" in str(caught.value)
