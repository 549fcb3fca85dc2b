"""No command deletes or replaces what it did not write: every command that writes into a folder the user
names claims it first. A folder holding anything else is refused (commands that write a folder as a whole)
or kept beside the outputs (predict, eval, data synth); ``--overwrite`` replaces only the command's own
earlier outputs; a training run's folder, a folder holding runs and a run's own parts are never targets."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from sam3tune.cli import main
from sam3tune.config import load_config
from sam3tune.train.config import TrainConfig
from sam3tune.train.recipe import train
from tests.data.conftest import write_image
from tests.train.coco_fixture import write_dataset


def _digest(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (and ``folder`` itself when it is a file) with its content's hash."""
    files = [folder] if folder.is_file() else sorted(p for p in folder.rglob("*") if p.is_file())
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("data"), train=2, valid=2)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data):
    """A folder holding one real (tiny, one-step) training run."""
    runs = tmp_path_factory.mktemp("runs")
    overrides = [
        f"data.root={data}", f"output_dir={runs}", "run_name=r1", "model.name=tiny", "loop.max_steps=1",
        "loop.num_workers=0", "val.every_epochs=0",
    ]  # fmt: skip
    train(load_config(TrainConfig, None, overrides))
    return runs


@pytest.fixture
def user_folder(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("my notes")
    return folder


def _refused(argv: list[str], capsys, *protected: Path, fragment: str) -> None:
    """``argv`` exits 2 naming ``fragment`` and changes nothing in ``protected``."""
    before = [_digest(p) for p in protected]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err, err
    assert [_digest(p) for p in protected] == before


def _commands(run: Path, data: Path, out: Path, images: Path) -> dict[str, list[str]]:
    """Every command that writes into a folder the user names, with ``out`` as that folder."""
    torch.save({"model": {}}, images.parent / "meta.pt")
    return {
        "export hub": ["export", "--format", "hub", str(run), str(out)],
        "export onnx": ["export", "--format", "onnx", str(run / "model"), str(out)],
        "export video": ["export", "--format", "video", str(run), str(out)],
        "import-checkpoint": ["import-checkpoint", str(images.parent / "meta.pt"), str(out)],
        "data convert": ["data", "convert", str(data), "--to", "coco", "--out", str(out)],
        "data synth": ["data", "synth", str(out), "--images", "1"],
        "demo": ["demo", "--out", str(out), "steps=1", "train_images=2", "heldout_images=1"],
        "predict": ["predict", "--model", "tiny", "--prompt", "x", str(images), "--out", str(out)],
        "eval": ["eval", "--model", "tiny", "--data", str(data), "--out", str(out)],
        "train": ["train", "--data", str(data), "model.name=tiny", f"output_dir={out}", "run_name=new"],
    }


@pytest.fixture
def images(tmp_path):
    write_image(tmp_path / "images" / "a.png", 20, 20)
    return tmp_path / "images"


WHOLE_FOLDER = ("export hub", "export onnx", "export video", "import-checkpoint", "data convert", "demo")


@pytest.mark.parametrize("command", WHOLE_FOLDER)
def test_a_folder_written_as_a_whole_is_refused_when_it_holds_anything_else(
    command, runs, data, user_folder, images, capsys
):
    argv = _commands(runs / "r1", data, user_folder, images)[command]
    _refused(argv, capsys, user_folder, runs, fragment=f"{user_folder}")
    assert (user_folder / "notes.txt").read_text() == "my notes"


@pytest.mark.parametrize("command", [*WHOLE_FOLDER, "data synth", "predict", "eval", "train"])
def test_a_training_run_is_never_an_output_target(command, runs, data, images, capsys):
    run = runs / "r1"
    argv = _commands(run, data, run, images)[command]
    key = "output_dir" if command == "train" else ""
    _refused(argv, capsys, runs, fragment=f"{key}{' ' if key else ''}{run} is a training run's folder")


@pytest.mark.parametrize("command", [*WHOLE_FOLDER, "data synth", "predict", "eval"])
def test_a_folder_holding_runs_is_never_an_output_target(command, runs, data, images, capsys):
    argv = _commands(runs / "r1", data, runs, images)[command]
    _refused(argv, capsys, runs, fragment=f"{runs} holds training runs (r1)")


@pytest.mark.parametrize("command", ["export hub", "export onnx", "predict", "eval", "data synth"])
def test_a_runs_own_parts_are_never_output_targets(command, runs, data, images, capsys):
    inside = runs / "r1" / "checkpoints" / "mine"
    argv = _commands(runs / "r1", data, inside, images)[command]
    _refused(argv, capsys, runs, fragment=f"is inside checkpoints/ of the training run {runs / 'r1'}")
    assert not inside.exists()


def test_export_replaces_only_its_own_earlier_output(runs, tmp_path, capsys):
    run, out = runs / "r1", tmp_path / "hub"
    assert main(["export", "--format", "hub", str(run), str(out)]) == 0
    first = _digest(out)
    _refused(["export", "--format", "hub", str(run), str(out)], capsys, out, run, fragment="pass --overwrite")
    assert main(["export", "--format", "hub", str(run), str(out), "--overwrite"]) == 0
    assert set(_digest(out)) == set(first)
    (out / "my-notes.md").write_text("mine")  # something the export did not write: even --overwrite stops
    _refused(
        ["export", "--format", "hub", str(run), str(out), "--overwrite"], capsys, out, fragment="my-notes.md"
    )
    # a sibling NAME.tmp that sam3tune did not make is never removed by the atomic write
    (out / "my-notes.md").unlink()
    (tmp_path / "hub.tmp").mkdir()
    (tmp_path / "hub.tmp" / "keep").write_text("x")
    _refused(
        ["export", "--format", "hub", str(run), str(out), "--overwrite"],
        capsys,
        tmp_path / "hub.tmp",
        fragment=f"{tmp_path / 'hub.tmp'} is in the way",
    )


def test_synth_keeps_other_files_and_replaces_only_its_splits(tmp_path, capsys):
    out = tmp_path / "synth"
    out.mkdir()
    (out / "README.md").write_text("mine")
    assert main(["data", "synth", str(out), "--images", "1"]) == 0
    assert (out / "README.md").read_text() == "mine" and (out / "train" / "_annotations.coco.json").is_file()
    _refused(
        ["data", "synth", str(out), "--images", "1"], capsys, out, fragment="already holds results (train"
    )
    assert main(["data", "synth", str(out), "--images", "1", "--overwrite"]) == 0
    assert (out / "README.md").read_text() == "mine"


def test_import_checkpoint_into_an_empty_folder(tmp_path, capsys):
    (tmp_path / "out").mkdir()
    torch.save({"model": {"not_sam3.weight": torch.zeros(2)}}, tmp_path / "other.pt")
    # an empty folder is accepted; the bad checkpoint is what is refused, and nothing is left behind
    _refused(
        ["import-checkpoint", str(tmp_path / "other.pt"), str(tmp_path / "out")],
        capsys,
        tmp_path / "out",
        fragment="no Sam3Model counterpart",
    )
    assert list((tmp_path / "out").iterdir()) == []
