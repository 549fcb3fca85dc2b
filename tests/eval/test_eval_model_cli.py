"""``sam3tune eval --model`` end to end: the named tiny model on a tiny dataset."""

import json

import torch
from eval_tiny_dataset import write_tiny_dataset

from sam3tune.cli import main
from sam3tune.data import DataConfig, build_eval_dataset, collate
from sam3tune.eval.api import make_validator
from sam3tune.eval.config import EvalConfig
from sam3tune.eval.ground_truth import ground_truth_from_plan
from sam3tune.eval.model_eval import score_module
from sam3tune.model import Sam3ForTraining, load_model


def test_eval_tiny_model_with_baseline_writes_reports(tmp_path):
    write_tiny_dataset(tmp_path / "data")
    out = tmp_path / "report"
    code = main(
        [
            "eval",
            "--model",
            "tiny",
            "baseline=tiny",
            "--data",
            str(tmp_path / "data"),
            "data.val=valid",
            "--out",
            str(out),
            "device=cpu",
            "num_workers=0",
            "batch_size=2",
        ]
    )
    assert code == 0
    report = json.loads((out / "eval.json").read_text())
    model, baseline = report["model"], report["baseline"]
    assert model["label"] == "tiny" and report["context"]["model"] == "tiny"
    metrics = model["metrics"]
    assert metrics["images"] == 3 and metrics["categories"] == 2 and metrics["queries"] == 6
    # a random tiny model keeps every proposal (score threshold 0): 6 queries x 6 proposals
    assert metrics["detections"] == 36
    for key in ("bbox_AP", "segm_AP", "bbox_cgF1", "segm_cgF1"):
        assert model["summary"][key] is not None and -1.0 <= model["summary"][key] <= 1.0
    assert metrics["specificity"]["per_category"]["fig"]["negative_images"] == 2
    assert metrics["specificity"]["per_category"]["date"]["negative_images"] == 0
    # the same seeded model twice: identical numbers side by side
    assert baseline["summary"] == model["summary"]
    predictions = json.loads((out / "predictions.json").read_text())
    assert len(predictions) == 36 and {p["category_id"] for p in predictions} == {1, 2}
    assert all(p["segmentation"]["size"] == [48, 64] for p in predictions)
    md = (out / "eval.md").read_text()
    assert "| metric | tiny | tiny | change |" in md
    ap = f"{100 * model['summary']['bbox_AP']:.1f}"
    assert f"| box AP | {ap} | {ap} | +0.0 |" in md
    assert "| fig |" in md and "| date |" in md


def test_score_module_restores_training_mode(tmp_path):
    write_tiny_dataset(tmp_path / "data")
    bundle = load_model("tiny")
    module = Sam3ForTraining(bundle.model, bundle.tokenize, one_to_many=True).train()
    dataset = build_eval_dataset(
        DataConfig(root=tmp_path / "data", resolution=64, masks=False), progress=False
    )
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=3, collate_fn=lambda s: collate(s, bundle.tokenize)
    )
    metrics, results = score_module(module, loader, ground_truth_from_plan(dataset.plan), progress=False)
    assert module.training
    assert len(results) == 6 * 6  # eval mode: no one-to-many proposals in the outputs
    assert metrics.queries == 6


def test_validator_for_the_train_loop(tmp_path):
    write_tiny_dataset(tmp_path / "data")
    bundle = load_model("tiny")
    module = Sam3ForTraining(bundle.model, bundle.tokenize).train()
    dataset = build_eval_dataset(DataConfig(root=tmp_path / "data", resolution=64), progress=False)
    config = EvalConfig(num_workers=0, batch_size=2)
    validate = make_validator(dataset, bundle.tokenize, config)
    numbers = validate(module)
    assert module.training
    assert {"bbox_AP", "segm_AP", "bbox_cgF1", "segm_cgF1", "false_fire_rate"} <= set(numbers)
    assert all(isinstance(v, float) for v in numbers.values())
    assert validate(module) == numbers  # deterministic in eval mode


def test_eval_needs_a_source(capsys):
    assert main(["eval", "--model", "tiny"]) == 2
    assert "give --model and --data" in capsys.readouterr().err
