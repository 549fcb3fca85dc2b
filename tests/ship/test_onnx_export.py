"""ONNX export: onnxruntime equals torch within 1e-4 on `tiny` and on the demo model, and `predict` through
onnxruntime gives the torch path's detections.

Exports take minutes of CPU with the dynamo exporter (the default): the default suite exports `tiny` with it
and the demo model with the TorchScript exporter (seconds); `-m slow` adds the demo model with dynamo."""

import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from sam3tune.cli import main
from sam3tune.data.synth import generate
from sam3tune.demo.base import base_model_dir
from sam3tune.demo.tasks import pretraining_task
from sam3tune.eval.config import PostprocessConfig
from sam3tune.eval.rle import decode_masks
from sam3tune.model import Sam3ForTraining, load_model
from sam3tune.model.hub import ModelSpecError
from sam3tune.predict import Predictor
from sam3tune.ship.onnx_export import GRAPHS, MANIFEST, OUTPUTS, OnnxManifest, export_onnx
from sam3tune.ship.onnx_model import OnnxSam3, compare_with_torch

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """The tiny architecture saved as a model folder (as RUN_DIR/model is)."""
    directory = tmp_path_factory.mktemp("tiny") / "model"
    bundle = load_model("tiny")
    Sam3ForTraining(bundle.model, bundle.tokenize).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def tiny_onnx(tiny_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "tiny"
    export_onnx(str(tiny_dir), out)
    return out


@pytest.fixture(scope="module", params=["torchscript", pytest.param("dynamo", marks=pytest.mark.slow)])
def demo_onnx(request, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / f"demo-{request.param}"
    manifest = export_onnx(str(base_model_dir()), out, dynamo=request.param == "dynamo")
    assert manifest.exporter == request.param
    return out


@pytest.fixture(scope="module")
def demo_images(tmp_path_factory):
    """Two images of the shapes the demo base was pretrained on (circles, squares, hexagons, ...)."""
    out = tmp_path_factory.mktemp("shapes")
    generate(pretraining_task(2, 1, 4, seed=5), out, progress=False)
    return sorted((out / "train").glob("*.jpg"))


def _torch_outputs(spec, inputs):
    bundle = load_model(spec)
    model = Sam3ForTraining(bundle.model, bundle.tokenize, one_to_many=False).eval()
    with torch.no_grad():
        return model(*inputs)


def _inputs(spec, images, prompts, index, seed=3):
    bundle = load_model(spec)
    size = bundle.image_size
    pixel_values = torch.rand(images, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    input_ids, attention_mask = bundle.tokenize(prompts)
    return pixel_values, torch.tensor(index), input_ids, attention_mask


def test_export_writes_three_graphs_the_tokenizer_and_the_manifest(tiny_dir, tiny_onnx):
    names = {p.name for p in tiny_onnx.iterdir()}
    assert {f"{g}.onnx" for g in GRAPHS} | {MANIFEST, "sam3tune_tokenizer.json"} <= names
    manifest = OnnxManifest.read(tiny_onnx)
    assert (manifest.opset, manifest.image_size, manifest.num_levels, manifest.num_queries) == (18, 64, 3, 6)
    assert manifest.exporter == "dynamo" and manifest.source == str(tiny_dir)

    import onnx

    decoder = onnx.load(str(tiny_onnx / "decoder.onnx"))
    assert [i.name for i in decoder.graph.input][-3:] == ["image_index", "text_features", "attention_mask"]
    assert [o.name for o in decoder.graph.output] == list(OUTPUTS)
    assert max(op.version for op in decoder.opset_import if op.domain in ("", "ai.onnx")) == 18


@pytest.mark.parametrize(
    ("images", "prompts", "index"),
    [
        (1, ["cat"], [0]),  # one image, one one-word prompt
        (3, ["red apple", "a small brown nut in a bowl", "fig", "red apple", "x"], [2, 0, 1, 1, 2]),
    ],
)
def test_onnxruntime_equals_torch_on_tiny_for_any_batch_and_prompt_length(
    tiny_dir, tiny_onnx, images, prompts, index
):
    inputs = _inputs(str(tiny_dir), images, prompts, index)
    expected = _torch_outputs(str(tiny_dir), inputs)
    got = OnnxSam3(tiny_onnx)(*inputs)
    for key in OUTPUTS:
        assert got[key].shape == expected[key].shape, key
        difference = float((got[key] - expected[key]).abs().max())
        assert difference <= TOLERANCE, (key, difference)


def test_onnxruntime_equals_torch_on_the_demo_model(demo_onnx):
    assert compare_with_torch(str(base_model_dir()), demo_onnx) <= TOLERANCE
    inputs = _inputs(str(base_model_dir()), 2, ["circle", "red square", "star"], [0, 1, 1])
    expected = _torch_outputs(str(base_model_dir()), inputs)
    got = OnnxSam3(demo_onnx / "decoder.onnx")(*inputs)  # any graph file names the export
    for key in OUTPUTS:
        assert float((got[key] - expected[key]).abs().max()) <= TOLERANCE, key


def _image(path):
    """A 96 x 80 picture (not the model's square input size) of a red disc and a blue block on grey."""
    image = Image.new("RGB", (96, 80), (128, 128, 128))
    draw = ImageDraw.Draw(image)
    draw.ellipse((8, 10, 38, 40), fill=(220, 30, 30))
    draw.rectangle((55, 35, 85, 65), fill=(30, 60, 220))
    image.save(path)
    return path


def _assert_same_detections(a, b):
    assert list(a) == list(b)
    for prompt in a:
        x, y = a[prompt], b[prompt]
        assert len(x) == len(y), prompt
        if not len(x):
            continue
        np.testing.assert_allclose(x.scores, y.scores, atol=TOLERANCE)
        np.testing.assert_allclose(x.boxes, y.boxes, atol=1e-2)  # pixels of the original image
        masks_x, masks_y = x.mask_array(), y.mask_array()
        # bilinear upsampling then > 0.5: a pixel can flip only where the logit is within ~1e-4 of 0
        assert (masks_x != masks_y).mean() <= 1e-3, prompt


@pytest.mark.parametrize("threshold", [0.0, 0.5])
def test_predict_through_onnxruntime_gives_the_torch_detections(demo_onnx, demo_images, threshold):
    prompts = ["circle", "square", "hexagon", "star"]
    config = PostprocessConfig(score_threshold=threshold)
    torch_predictor = Predictor.load(str(base_model_dir()), config=config, device="cpu")
    onnx_predictor = Predictor.load(demo_onnx, config=config)
    found = 0
    for image in demo_images:
        torch_found = torch_predictor.predict(image, prompts)
        _assert_same_detections(torch_found, onnx_predictor.predict(image, prompts))
        found += sum(len(d) for d in torch_found.values())
    assert found >= (2 if threshold else 2 * 4 * 10)  # real detections are compared, not empty lists


def test_cli_export_and_predict_match_the_torch_predict(tiny_dir, tmp_path, capsys):
    out = tmp_path / "exported"
    assert main(["export", "--format", "onnx", str(tiny_dir), str(out), "onnx.exporter=torchscript"]) == 0
    printed = capsys.readouterr().out
    difference = float(printed.split("max |difference| ")[1].split()[0])
    assert difference <= TOLERANCE
    images = tmp_path / "images"
    images.mkdir()
    _image(images / "a.png")
    common = [
        "--prompt",
        "red apple",
        "--prompt",
        "nut",
        "postprocess.score_threshold=0",
        "overlays=false",
        str(images),
    ]
    assert main(["predict", "--model", str(tiny_dir), "--out", str(tmp_path / "t"), *common]) == 0
    assert main(["predict", "--model", str(out / "decoder.onnx"), "--out", str(tmp_path / "o"), *common]) == 0
    torch_results = json.loads((tmp_path / "t" / "predictions.json").read_text())
    onnx_results = json.loads((tmp_path / "o" / "predictions.json").read_text())
    assert len(torch_results) == len(onnx_results) == 2 * 6  # every query of every prompt (threshold 0)
    for a, b in zip(torch_results, onnx_results, strict=True):
        assert (a["image_id"], a["category_id"]) == (b["image_id"], b["category_id"])
        assert a["score"] == pytest.approx(b["score"], abs=TOLERANCE)
        np.testing.assert_allclose(a["bbox"], b["bbox"], atol=1e-2)
        masks = decode_masks([a["segmentation"], b["segmentation"]], 80, 96)
        assert (masks[0] != masks[1]).mean() <= 1e-3


def test_bad_exports_are_refused_with_a_message(tmp_path, capsys):
    assert main(["export", "--format", "onnx", str(tmp_path / "missing"), str(tmp_path / "o")]) == 2
    assert "sam3tune export:" in capsys.readouterr().err
    assert main(["export", "--format", "onnx", "tiny", str(tmp_path / "o"), "onnx.opset=x"]) == 2
    (tmp_path / "not_export").mkdir()
    with pytest.raises(ModelSpecError, match="not a `sam3tune export --format onnx` folder"):
        OnnxSam3(tmp_path / "not_export")
