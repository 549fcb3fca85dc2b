"""Retention of untuned prompts: the starting model's detections are the reference, its own retention
AP is 100, another model's is lower; labelled retention data gives true AP; the eval command reports it."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from eval_tiny_dataset import write_tiny_dataset

from sam3tune.cli import main
from sam3tune.config import ConfigError
from sam3tune.data import DataConfig, build_eval_dataset
from sam3tune.eval.config import EvalConfig, RetentionConfig
from sam3tune.eval.retention import (
    PromptImage,
    RetentionProbe,
    folder_images,
    read_retention_prompts,
    reference_ground_truth,
    split_images,
)
from sam3tune.eval.rle import encode_masks
from sam3tune.predict import Predictor

EVAL = EvalConfig(num_workers=0, batch_size=2)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("retention")
    write_tiny_dataset(root / "data")
    predictor = Predictor.load("tiny", device="cpu")
    dataset = build_eval_dataset(
        DataConfig(root=root / "data", resolution=predictor.image_size), progress=False
    )
    return root, predictor, split_images(dataset.plan)


def perturbed(scale: float) -> Predictor:
    """The tiny model with every weight moved by ``scale`` x standard normal noise (seeded)."""
    predictor = Predictor.load("tiny", device="cpu")
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for param in predictor.model.parameters():
            param += scale * torch.randn(param.shape, generator=generator)
    return predictor


def build(predictor, eval_images, threshold, **config):
    config = RetentionConfig(prompts=["apple", "pear"], score_threshold=threshold, **config)
    return RetentionProbe.build(
        config,
        eval_images,
        predictor.forward,
        predictor.tokenize,
        predictor.image_size,
        ["date", "fig"],
        eval_config=EVAL,
    )


def test_the_starting_model_retains_everything_and_another_model_less(tiny):
    _, predictor, images = tiny
    scores = [r["score"] for r in build(predictor, images, 0.01)[1]]
    threshold = float(np.median(scores))  # half of the detections are the reference, half rank below it
    probe, results = build(predictor, images, threshold)
    assert len(results) == 3 * 2 * 6  # 3 images x 2 prompts x 6 proposals, every score kept
    assert 0 < len(probe.reference["annotations"]) < len(results)
    assert all(a["score"] >= threshold for a in probe.reference["annotations"])
    # measured again from scratch (as the trainer does at step 0): exactly the reference's answers
    same, _ = probe.measure(predictor.forward, predictor.tokenize, predictor.image_size, EVAL)
    assert same.summary() == {
        "retention_bbox_AP": 1.0,
        "retention_bbox_AP50": 1.0,
        "retention_segm_AP": 1.0,
        "retention_segm_AP50": 1.0,
    }
    assert sum(same.reference_objects.values()) == len(probe.reference["annotations"])
    other = perturbed(0.05)
    moved, _ = probe.measure(other.forward, other.tokenize, other.image_size, EVAL)
    assert moved.summary()["retention_bbox_AP"] < 0.9
    assert moved.summary()["retention_segm_AP"] < 0.9


def test_nothing_in_the_reference_leaves_retention_undefined(tiny):
    _, predictor, images = tiny
    probe, _ = build(predictor, images, 0.99)
    metrics = probe.score([], ["bbox", "segm"])
    assert metrics.coco == {} and metrics.summary() == {}
    assert "finds nothing" in metrics.notes[0]


def test_reference_ground_truth_keeps_confident_detections_and_boxes_of_empty_masks():
    images = [PromptImage(7, Path("x.jpg"), 4, 4)]
    full = encode_masks(np.ones((1, 4, 4), bool))[0]
    empty = encode_masks(np.zeros((1, 4, 4), bool))[0]
    results = [
        {"image_id": 7, "category_id": 1, "bbox": [0, 0, 4, 4], "score": 0.9, "segmentation": full},
        {"image_id": 7, "category_id": 2, "bbox": [1, 1, 2, 2], "score": 0.6, "segmentation": empty},
        {"image_id": 7, "category_id": 2, "bbox": [0, 0, 1, 1], "score": 0.4, "segmentation": full},
    ]
    gt = reference_ground_truth(images, ["apple", "pear"], results, 0.5)
    assert gt["categories"] == [{"id": 1, "name": "apple"}, {"id": 2, "name": "pear"}]
    assert [a["category_id"] for a in gt["annotations"]] == [1, 2]
    assert gt["annotations"][0]["area"] == 16.0 and "segmentation" in gt["annotations"][0]
    assert "segmentation" not in gt["annotations"][1] and gt["annotations"][1]["area"] == 4.0


def test_labelled_retention_data_gives_true_ap(tiny):
    root, predictor, images = tiny
    labelled = write_renamed(root / "fruit", {"date": "apple", "fig": "pear"})
    probe, _ = build(predictor, images, 0.3, data=labelled, split="valid")
    metrics, _ = probe.measure(predictor.forward, predictor.tokenize, predictor.image_size, EVAL)
    summary = metrics.summary()
    assert {"retention_true_bbox_AP50", "retention_true_segm_AP", "retention_false_fire_rate"} <= set(summary)
    # "pear" (ex-"fig") is absent from 2 of the 3 images: its false fires are counted there
    assert metrics.true_specificity.per_category["pear"]["negative_images"] == 2
    assert metrics.notes == []


def test_prompts_from_a_list_or_a_file(tmp_path):
    assert read_retention_prompts(["Circle", "red_square"]) == ["circle", "red square"]
    lines = tmp_path / "prompts.txt"
    lines.write_text("circle  # seen in pretraining\n\nsquare\n")
    assert read_retention_prompts(lines) == ["circle", "square"]
    listed = tmp_path / "prompts.yaml"
    listed.write_text("- circle\n- red circle\n")
    assert read_retention_prompts(listed) == ["circle", "red circle"]
    with pytest.raises(ConfigError, match="cannot read it as a file"):
        read_retention_prompts(tmp_path / "circle")
    with pytest.raises(ConfigError, match="more than once"):
        read_retention_prompts(["circle", "Circle."])


def test_tuned_prompts_and_bad_folders_are_refused(tiny, tmp_path):
    _, predictor, images = tiny
    with pytest.raises(ConfigError, match=r"\['fig'\] are also categories"):
        RetentionProbe.build(
            RetentionConfig(prompts=["apple", "Fig"]),
            images,
            predictor.forward,
            predictor.tokenize,
            predictor.image_size,
            ["date", "fig"],
            eval_config=EVAL,
        )
    with pytest.raises(ConfigError, match="no readable image"):
        (tmp_path / "empty").mkdir()
        (tmp_path / "empty" / "broken.jpg").write_bytes(b"not a jpeg")
        folder_images(tmp_path / "empty", 10)


def test_extra_unlabelled_images_join_the_reference(tiny):
    root, predictor, images = tiny
    probe, results = build(predictor, images, 0.01, images=root / "data" / "valid")
    assert probe.extra_images == 3 and len(probe.images) == 6
    assert [i.image_id for i in probe.images[3:]] == [3, 4, 5]  # numbered after the split's ids 0-2
    assert {r["image_id"] for r in results} == {0, 1, 2, 3, 4, 5}


def write_renamed(root: Path, names: dict[str, str]) -> Path:
    """The tiny dataset with its categories renamed."""
    folder = write_tiny_dataset(root)
    annotations = folder / "_annotations.coco.json"
    coco = json.loads(annotations.read_text())
    for category in coco["categories"]:
        category["name"] = names[category["name"]]
    annotations.write_text(json.dumps(coco))
    return root


def test_eval_command_reports_retention_and_confusion(tiny, tmp_path):
    root, _, _ = tiny
    labelled = write_renamed(tmp_path / "fruit", {"date": "apple", "fig": "pear"})
    out = tmp_path / "report"
    args = ["eval", "--model", "tiny", "baseline=tiny", "--data", str(root / "data"), "--out", str(out)]
    settings = ["device=cpu", "num_workers=0", "batch_size=2", "retention.score_threshold=0.3"]
    code = main([*args, *settings, "retention.prompts=[apple, pear]", f"retention.data={labelled}"])
    assert code == 0
    report = json.loads((out / "eval.json").read_text())
    for side in ("model", "baseline"):  # the same seeded tiny model on both sides: it retains everything
        assert report[side]["summary"]["retention_bbox_AP"] == 1.0
        assert report[side]["summary"]["retention_true_bbox_AP50"] is not None
        assert report[side]["metrics"]["retention"]["prompts"] == ["apple", "pear"]
    assert report["model"]["metrics"]["confusion"]["extra_categories"] == ["apple", "pear"]
    assert len(json.loads((out / "baseline_predictions_retention.json").read_text())) == 3 * 2 * 6
    md = (out / "eval.md").read_text()
    assert "| retention box AP | 100.0 | 100.0 | +0.0 |" in md
    assert "## Retention (prompts not tuned)" in md and "## Prompt confusion" in md
    assert "| apple | " in md


def test_eval_command_refuses_retention_without_a_baseline(tiny, tmp_path, capsys):
    root, _, _ = tiny
    out = tmp_path / "report"
    code = main(["eval", "--model", "tiny", "--data", str(root / "data"), "--out", str(out), "device=cpu",
                 "retention.prompts=[apple]"])  # fmt: skip
    assert code == 2
    assert "retention.* needs baseline=" in capsys.readouterr().err
    assert not (out / "eval.json").exists()
