"""Issue 14, class 5: ``predict`` never loses finished work: unreadable files are skipped and counted,
results are kept whatever stops the run, and an output folder holding results is not mixed into."""

import json

import pytest
from PIL import Image
from test_predict import _FixedModel

from sam3tune.cli import main
from sam3tune.eval.coco_results import load_coco_results
from sam3tune.model import HashingTokenizer
from sam3tune.output_files import WriteError
from sam3tune.predict import Predictor, collect_images


@pytest.fixture
def predictor():
    return Predictor(_FixedModel(), HashingTokenizer(64, 8), image_size=32, device="cpu")


@pytest.fixture
def folder(tmp_path):
    """Five images and three files that only look like images."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for index in range(5):
        Image.new("RGB", (40 + index, 30), (90, 90, 90)).save(folder / f"img{index}.png")
    (folder / "text.jpg").write_text("this is not a JPEG")
    full = folder / "img0.png"
    (folder / "truncated.png").write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    (folder / "empty.jpeg").write_bytes(b"")
    return folder


def test_unreadable_files_are_skipped_and_counted(predictor, folder, tmp_path):
    done = predictor.predict_files(collect_images([folder]), ["date"], tmp_path / "out", progress=False)
    assert [e["file_name"].rsplit("/", 1)[1] for e in done.images] == [f"img{i}.png" for i in range(5)]
    skipped = {entry["file_name"].rsplit("/", 1)[1]: entry["reason"] for entry in done.skipped}
    assert sorted(skipped) == ["empty.jpeg", "text.jpg", "truncated.png"]
    assert all(reason for reason in skipped.values())
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert index["skipped"] == done.skipped and index["complete"] is True
    assert {r["image_id"] for r in load_coco_results(tmp_path / "out" / "predictions.json")} == {
        1,
        2,
        3,
        4,
        5,
    }


@pytest.mark.parametrize("stop", [RuntimeError("CUDA out of memory"), KeyboardInterrupt()])
def test_a_failure_at_image_4_keeps_images_1_to_3(predictor, folder, tmp_path, stop):
    calls = []
    original = predictor.predict

    def failing(image, prompts):
        calls.append(1)
        if len(calls) == 4:
            raise stop
        return original(image, prompts)

    predictor.predict = failing
    out = tmp_path / "out"
    with pytest.raises(type(stop)):
        predictor.predict_files(collect_images([folder]), ["date", "fig"], out, progress=False)
    index = json.loads((out / "index.json").read_text())
    assert index["complete"] is False and [e["id"] for e in index["images"]] == [1, 2, 3]
    results = load_coco_results(out / "predictions.json")
    assert {r["image_id"] for r in results} == {1, 2, 3} and len(results) == 3 * 2
    assert sorted(p.name for p in (out / "overlays").iterdir()) == ["img0.png", "img1.png", "img2.png"]


def test_a_killed_run_leaves_its_finished_images_in_the_journal(predictor, folder, tmp_path, monkeypatch):
    # a SIGKILL runs no `finally`: simulate it by making the final writes impossible
    original = predictor.predict
    calls = []

    def killed(image, prompts):
        calls.append(1)
        if len(calls) == 3:
            monkeypatch.setattr("sam3tune.predict.predictor.save_coco_results", lambda *a: None)
            monkeypatch.setattr("sam3tune.predict.predictor.write_text_atomic", lambda *a: None)
            monkeypatch.setattr("pathlib.Path.unlink", lambda *a, **k: None)
            raise SystemExit(137)
        return original(image, prompts)

    predictor.predict = killed
    with pytest.raises(SystemExit):
        predictor.predict_files(collect_images([folder]), ["date"], tmp_path / "out", progress=False)
    lines = (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()
    entries = [json.loads(line) for line in lines]
    assert [e["id"] for e in entries] == [1, 2] and all(len(e["detections"]) == 1 for e in entries)


def test_an_output_folder_with_results_is_refused_or_replaced_whole(predictor, folder, tmp_path):
    out = tmp_path / "out"
    predictor.predict_files(collect_images([folder]), ["date"], out, progress=False)
    before = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    (out / "mine.txt").write_text("the user's own file")
    with pytest.raises(
        WriteError, match=r"already holds results \(predictions\.json, index\.json, overlays\)"
    ):
        predictor.predict_files([folder / "img1.png"], ["date"], out, progress=False)
    assert {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != "mine.txt"} == before
    predictor.predict_files([folder / "img1.png"], ["date"], out, progress=False, overwrite=True)
    assert [p.name for p in (out / "overlays").iterdir()] == ["img1.png"]  # no stale overlays
    assert (out / "mine.txt").read_text() == "the user's own file"  # only our outputs are replaced
    assert len(json.loads((out / "index.json").read_text())["images"]) == 1


def test_the_cli_refuses_an_out_that_is_a_file_and_reports_skips(folder, tmp_path, capsys):
    (tmp_path / "taken").write_text("x")
    argv = ["predict", "--model", "tiny", "--prompt", "date", "device=cpu", str(folder)]
    assert main([*argv, "--out", str(tmp_path / "taken")]) == 2
    assert f"--out {tmp_path / 'taken'} exists and is not a folder" in capsys.readouterr().err
    assert (tmp_path / "taken").read_text() == "x"
    assert main([*argv, "--out", str(tmp_path / "out"), "overlays=false"]) == 0
    out = capsys.readouterr().out
    assert "on 5 images" in out and "3 file(s) skipped" in out
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    assert "already holds results (predictions.json, index.json); pass --overwrite" in capsys.readouterr().err
    assert main([*argv, "--out", str(tmp_path / "out"), "--overwrite"]) == 0
