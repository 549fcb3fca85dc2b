import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from sam3tune.cli import main
from sam3tune.errors import UserError
from sam3tune.eval.coco_results import detections_from_results, group_by_query, load_coco_results
from sam3tune.eval.config import PostprocessConfig
from sam3tune.model import HashingTokenizer
from sam3tune.output_files import WriteError
from sam3tune.overlay import prompt_colour
from sam3tune.predict import Predictor, collect_images


class _FixedModel(nn.Module):
    """Each prompt finds one object: prompt 0 the left half of the canvas, prompt 1 the bottom
    right quarter; every other proposal scores ~0."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, pixel_values, image_index, input_ids, attention_mask):
        assert pixel_values.shape[-1] == 32
        b, q = len(image_index), 3
        prompt = torch.arange(b) % 2
        logits = torch.full((b, q), -20.0)
        logits[:, 0] = 20.0
        boxes = torch.full((b, q, 4), 0.5)
        boxes[prompt == 0, 0] = torch.tensor([0.25, 0.5, 0.5, 1.0])
        boxes[prompt == 1, 0] = torch.tensor([0.75, 0.75, 0.5, 0.5])
        masks = torch.full((b, q, 16, 16), -20.0)
        masks[prompt == 0, 0, :, :8] = 20.0
        masks[prompt == 1, 0, 8:, 8:] = 20.0
        presence = torch.full((b, 1), 20.0)
        return {"pred_logits": logits, "pred_boxes": boxes, "presence_logits": presence, "pred_masks": masks}


@pytest.fixture
def predictor():
    return Predictor(_FixedModel(), HashingTokenizer(64, 8), image_size=32, device="cpu")


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.new("RGB", (120, 80), (100, 100, 100)).save(folder / "a.png")
    Image.new("RGB", (50, 70), (100, 100, 100)).save(folder / "b.jpg")
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_predict_maps_to_original_pixels(predictor, images):
    found = predictor.predict(images / "a.png", ["date", "fig"])
    assert list(found) == ["date", "fig"]
    date, fig = found["date"], found["fig"]
    assert len(date) == 1 and len(fig) == 1 and date.scores[0] == pytest.approx(1.0)
    np.testing.assert_allclose(date.boxes[0], [0, 0, 60, 80], atol=1e-4)
    np.testing.assert_allclose(fig.boxes[0], [60, 40, 120, 80], atol=1e-4)
    masks = date.mask_array()
    assert masks.shape == (1, 80, 120) and masks[0, :, :58].all() and not masks[0, :, 62:].any()


def test_predict_files_writes_json_and_overlays(predictor, images, tmp_path):
    out = tmp_path / "out"
    paths = collect_images([images])
    assert [p.name for p in paths] == ["a.png", "b.jpg"]
    done = predictor.predict_files(paths, ["date", "fig"], out, progress=False)
    results = done.results
    assert len(results) == 4 and done.complete and done.skipped == []
    index = json.loads((out / "index.json").read_text())
    assert index["complete"] is True and not (out / "predictions.jsonl").exists()
    assert [c["name"] for c in index["categories"]] == ["date", "fig"]
    loaded = load_coco_results(out / "predictions.json")
    assert loaded == results
    for entry in index["images"]:
        overlay = Image.open(out / entry["overlay"])
        assert overlay.size == (entry["width"], entry["height"])
        pixels = np.asarray(overlay).astype(int)
        groups = group_by_query(loaded)
        h, w = entry["height"], entry["width"]
        for category_id in (1, 2):
            masks = detections_from_results(groups[entry["id"], category_id], (h, w)).mask_array()
            expected = np.round(0.5 * 100 + 0.5 * np.array(prompt_colour(category_id - 1)))
            inside = masks[0].copy()
            inside[: h // 4] = False  # skip the label strip at the top
            ys, xs = np.nonzero(inside)
            core = (ys > ys.min() + 3) & (ys < ys.max() - 3) & (xs > xs.min() + 3) & (xs < xs.max() - 3)
            assert core.sum() > 20
            assert (np.abs(pixels[ys[core], xs[core]] - expected) <= 1).all()
    # a.png: the top-right quarter holds no mask; below the "date" label, above the "fig" one: untouched
    a = np.asarray(Image.open(out / index["images"][0]["overlay"])).astype(int)
    assert (a[14:24, 70:115] == 100).all()


def test_predict_cli_with_tiny_model(images, tmp_path):
    out = tmp_path / "cli"
    code = main(
        [
            "predict",
            "--model",
            "tiny",
            "--prompt",
            "date",
            "--prompt",
            "fig",
            str(images / "a.png"),
            str(images / "b.jpg"),
            "--out",
            str(out),
            "postprocess.score_threshold=0",
            "device=cpu",
        ]
    )
    assert code == 0
    results = load_coco_results(out / "predictions.json")
    assert len(results) == 2 * 2 * 6  # tiny model: 6 proposals per prompt, all kept at threshold 0
    sizes = {
        e["id"]: (e["height"], e["width"]) for e in json.loads((out / "index.json").read_text())["images"]
    }
    assert sizes == {1: (80, 120), 2: (70, 50)}
    assert all(r["segmentation"]["size"] == list(sizes[r["image_id"]]) for r in results)
    assert Image.open(out / "overlays" / "b.png").size == (50, 70)


def test_bad_prompts_and_paths(predictor, tmp_path):
    with pytest.raises(ValueError, match="repeat"):
        predictor.predict(Image.new("RGB", (8, 8)), ["a", "a"])
    with pytest.raises(UserError, match="no such"):
        collect_images([tmp_path / "missing.jpg"])


# Issue 14, class 5: predict never loses finished work: unreadable files are skipped and counted, results
# are kept whatever stops the run, and an output folder holding results is not mixed into.


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
    original = predictor.forward

    def failing(batch):
        calls.append(1)
        if len(calls) == 4:
            raise stop
        return original(batch)

    predictor.forward = failing
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
    original = predictor.forward
    calls = []

    def killed(batch):
        calls.append(1)
        if len(calls) == 3:
            monkeypatch.setattr("sam3tune.predict.predictor.save_coco_results", lambda *a: None)
            monkeypatch.setattr("sam3tune.predict.predictor.write_text_atomic", lambda *a: None)
            monkeypatch.setattr("pathlib.Path.unlink", lambda *a, **k: None)
            raise SystemExit(137)
        return original(batch)

    predictor.forward = killed
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


class _RecordingModel(_FixedModel):
    """``_FixedModel`` that also takes exemplar boxes and keeps what it was given."""

    def forward(
        self, pixel_values, image_index, input_ids, attention_mask, exemplar_boxes=None, exemplar_labels=None
    ):
        self.seen = (exemplar_boxes, exemplar_labels, input_ids)
        return super().forward(pixel_values, image_index, input_ids, attention_mask)


def test_exemplar_boxes_reach_the_model_normalised(images):
    model = _RecordingModel()
    predictor = Predictor(model, HashingTokenizer(64, 8), image_size=32, device="cpu")
    # a.png is 120 x 80: (12, 8, 60, 40) -> centre (36, 24), size 48 x 32; a negative partly outside
    found = predictor.predict(images / "a.png", boxes=[(12, 8, 60, 40)], negative_boxes=[(100, 60, 130, 90)])
    assert list(found) == ["visual"]
    boxes, labels, input_ids = model.seen
    torch.testing.assert_close(
        boxes, torch.tensor([[[0.3, 0.3, 0.4, 0.4], [110 / 120, 0.875, 20 / 120, 0.25]]])
    )
    assert labels.tolist() == [[1, 0]]
    assert torch.equal(input_ids, HashingTokenizer(64, 8)(["visual"])[0])
    # with prompts, every prompt carries the boxes
    found = predictor.predict(images / "a.png", ["date", "fig"], boxes=[(12, 8, 60, 40)])
    assert list(found) == ["date", "fig"] and model.seen[0].shape == (2, 1, 4)
    assert model.seen[1].tolist() == [[1], [1]]
    with pytest.raises(ValueError, match="empty inside"):
        predictor.predict(images / "a.png", boxes=[(130, 10, 140, 20)])
    with pytest.raises(ValueError, match="prompt or a positive exemplar box"):
        predictor.predict(images / "a.png", negative_boxes=[(12, 8, 60, 40)])


def test_predict_cli_with_boxes_only(images, tmp_path):
    out = tmp_path / "cli"
    args = ["predict", "--model", "tiny", str(images / "a.png"), "--out", str(out), "device=cpu"]
    code = main([*args, "--box", "12,8,60,40", "--neg-box", "70,44,110,76", "postprocess.score_threshold=0"])
    assert code == 0
    index = json.loads((out / "index.json").read_text())
    assert index["categories"] == [{"id": 1, "name": "visual"}]
    assert index["exemplars"] == {"positive": [[12, 8, 60, 40]], "negative": [[70, 44, 110, 76]]}
    results = load_coco_results(out / "predictions.json")
    assert len(results) == 6 and {r["category_id"] for r in results} == {1}
    # the same query through the API gives the same scores
    predictor = Predictor.load("tiny", config=PostprocessConfig(score_threshold=0.0), device="cpu")
    api = predictor.predict(images / "a.png", boxes=[(12, 8, 60, 40)], negative_boxes=[(70, 44, 110, 76)])
    np.testing.assert_allclose(
        sorted(r["score"] for r in results), sorted(api["visual"].scores.tolist()), rtol=1e-5
    )
    # and the boxes matter: a text query scores differently
    text = predictor.predict(images / "a.png", ["visual"])
    assert not np.allclose(sorted(text["visual"].scores.tolist()), sorted(api["visual"].scores.tolist()))
    # exemplar boxes are drawn as white outlines inside black ones, with labels below them
    overlay = np.asarray(Image.open(out / "overlays" / "a.png")).astype(int)
    assert (overlay[24, 12] == 255).all() and (overlay[24, 11] == 0).all()  # left edge of the positive box
    assert (overlay[60, 70] == 255).all() and (overlay[60, 69] == 0).all()  # the negative one


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--box", "1,2,3"], "x0,y0,x1,y1"),
        (["--neg-box", "5,5,2,9", "--prompt", "a"], "x0 < x1"),
    ],
)
def test_predict_cli_rejects_bad_boxes(images, tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "--model", "tiny", str(images / "a.png"), "--out", str(tmp_path), *extra])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_predict_cli_needs_a_prompt_or_a_box_and_takes_boxes_as_keys(images, tmp_path, capsys):
    args = ["predict", "--model", "tiny", str(images / "a.png"), "device=cpu"]
    assert main([*args, "--out", str(tmp_path / "none")]) == 2
    assert "--box X0,Y0,X1,Y1" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "keys"), "boxes=[[12, 8, 60, 40]]", "negative_boxes=[]"]) == 0
    index = json.loads((tmp_path / "keys" / "index.json").read_text())
    assert index["categories"] == [{"id": 1, "name": "visual"}]
    assert index["exemplars"] == {"positive": [[12, 8, 60, 40]], "negative": []}
