"""Frames one at a time: video files (PyAV), frame folders, globs; range, stride, maximum; bad input."""

import sys

import numpy as np
import pytest
from PIL import Image

from sam3tune.errors import MissingPackageError
from sam3tune.video.frames import VideoInputError, open_frames


def _frames(folder, count, size=(20, 12), name="f{}.png"):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.fromarray(np.full((size[1], size[0], 3), i * 10, np.uint8)).save(folder / name.format(i))
    return folder


def _value(image):
    return int(np.asarray(image)[0, 0, 0])


def test_folder_in_natural_order_with_range_stride_and_maximum(tmp_path):
    folder = _frames(tmp_path / "f", 12)
    reader = open_frames(folder)
    assert reader.count == 12 and reader.fps == 30.0
    assert [(i, _value(im)) for i, im in reader] == [(i, 10 * i) for i in range(12)]  # f2 before f10
    reader = open_frames(folder, start=2, end=11, stride=3, fps=5)
    assert reader.count == 3 and reader.fps == 5
    assert [i for i, _ in reader] == [2, 5, 8]
    reader = open_frames(folder, start=1, stride=2, max_frames=4)
    assert reader.count == 4 and [i for i, _ in reader] == [1, 3, 5, 7]


def test_glob_and_unreadable_frame_skipped(tmp_path):
    folder = _frames(tmp_path / "f", 4, name="frame_{}.jpg")
    (folder / "frame_2.jpg").write_bytes(b"not a jpeg")
    (folder / "notes.txt").write_text("ignored")
    reader = open_frames(str(folder / "frame_*.jpg"))
    assert reader.kind == "glob" and reader.count == 4
    assert [i for i, _ in reader] == [0, 1, 3]
    assert len(reader.skipped) == 1 and reader.skipped[0]["file_name"].endswith("frame_2.jpg")


def test_video_file_decoded_frame_by_frame(tmp_path):
    av = pytest.importorskip("av")
    path = tmp_path / "clip.mp4"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=12)
        stream.width, stream.height, stream.pix_fmt = 32, 16, "yuv420p"
        for i in range(10):
            frame = av.VideoFrame.from_ndarray(np.full((16, 32, 3), 20 * i, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    reader = open_frames(path, start=1, stride=2)
    assert reader.kind == "file" and reader.fps == pytest.approx(12)
    assert reader.count == 5
    frames = list(reader)
    assert [i for i, _ in frames] == [1, 3, 5, 7, 9]
    assert all(im.size == (32, 16) for _, im in frames)
    assert [_value(im) for _, im in frames] == pytest.approx([20, 60, 100, 140, 180], abs=6)  # lossy codec


def test_bad_input_is_named(tmp_path):
    with pytest.raises(VideoInputError, match="no such video file"):
        open_frames(tmp_path / "missing.mp4")
    (tmp_path / "empty").mkdir()
    with pytest.raises(VideoInputError, match="without frame images"):
        open_frames(tmp_path / "empty")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(VideoInputError, match="not a video file"):
        open_frames(tmp_path / "notes.txt")
    with pytest.raises(VideoInputError, match="matches no frame image"):
        open_frames(str(tmp_path / "none_*.png"))
    pytest.importorskip("av")
    (tmp_path / "broken.mp4").write_bytes(b"\x00" * 100)
    with pytest.raises(VideoInputError, match=r"broken\.mp4: not a readable video"):
        open_frames(tmp_path / "broken.mp4")


def test_without_pyav_a_video_file_says_how_to_install(tmp_path, monkeypatch):
    (tmp_path / "clip.mp4").write_bytes(b"\x00")
    monkeypatch.setitem(sys.modules, "av", None)
    with pytest.raises(MissingPackageError, match=r"pip install 'sam3tune\[video\]'"):
        open_frames(tmp_path / "clip.mp4")
