"""One atomic-directory writer for checkpoints and exports."""

import pytest

from sam3tune.atomic import atomic_directory, complete_copy


def test_replaces_on_success_and_leaves_the_old_directory_on_failure(tmp_path):
    target = tmp_path / "model"
    with atomic_directory(target) as staging:
        (staging / "weights.bin").write_bytes(b"one")
        (staging / "sub").mkdir()
        (staging / "sub" / "a.txt").write_text("x")
    assert (target / "weights.bin").read_bytes() == b"one" and (target / "sub" / "a.txt").read_text() == "x"
    with pytest.raises(RuntimeError), atomic_directory(target) as staging:
        (staging / "weights.bin").write_bytes(b"half")
        raise RuntimeError("crash while writing")
    assert (target / "weights.bin").read_bytes() == b"one"
    with atomic_directory(target) as staging:
        (staging / "weights.bin").write_bytes(b"two")
    assert (target / "weights.bin").read_bytes() == b"two" and not (target / "sub").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no staging or old copy left


def test_complete_copy_falls_back_to_the_old_directory(tmp_path):
    (tmp_path / "last.old").mkdir()
    (tmp_path / "last.old" / "done").write_text("")

    def is_complete(path):
        return (path / "done").is_file()

    assert complete_copy(tmp_path / "last", is_complete) == tmp_path / "last.old"
    assert complete_copy(tmp_path / "best", is_complete) is None
