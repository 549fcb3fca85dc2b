"""With validation on, a run first validates the starting model (step 0, the zero-shot baseline) and ends
with the verdict: best validation value against it."""

import dataclasses

import pytest
from coco_fixture import write_dataset
from PIL import Image

from sam3tune.cli import main
from sam3tune.data import build_eval_dataset
from sam3tune.eval.api import make_validator
from sam3tune.model import Sam3ForTraining, load_model
from sam3tune.train.loss_curve import plot_loss_curve
from sam3tune.train.metrics_log import read_metrics

ARGS = [
    "model.name=tiny", "loop.num_workers=0", "loop.batch_size=2", "loop.epochs=2", "val.every_epochs=1",
    "val.eval.num_workers=0", "val.best_metric=bbox_AP50",
]  # fmt: skip


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("data"), train=8, valid=3)


def test_step_zero_is_the_starting_model_and_the_run_ends_with_the_verdict(dataset, tmp_path, capsys):
    status = main(["train", "--data", str(dataset), f"output_dir={tmp_path}", "run_name=r", *ARGS])
    assert status == 0
    records = read_metrics(tmp_path / "r" / "metrics.jsonl")
    val = [r for r in records if r["kind"] == "val"]
    assert [r["step"] for r in val] == [0, 4, 8]
    assert records[0]["kind"] == "val"  # before the first optimizer step

    # step 0 equals an evaluation of the untrained model, made independently of the loop
    from sam3tune.config import load_config
    from sam3tune.train.config import TrainConfig

    config = load_config(TrainConfig, None, [f"data.root={dataset}", *ARGS])
    bundle = load_model("tiny", seed=config.loop.seed)
    data = dataclasses.replace(config.data, resolution=bundle.image_size)
    validate = make_validator(build_eval_dataset(data, progress=False), bundle.tokenize, config.val.eval)
    expected = validate(Sam3ForTraining(bundle.model, bundle.tokenize, one_to_many=False).eval())
    for key in ("bbox_AP", "bbox_AP50", "segm_AP", "bbox_cgF1", "false_fire_rate"):
        assert val[0][key] == pytest.approx(expected[key], abs=1e-9), key

    # the best checkpoint is chosen among trained weights only, and the verdict names it
    best = max(val[1:], key=lambda r: r["bbox_AP50"])
    out = capsys.readouterr().out
    verdict = next(line for line in out.splitlines() if line.startswith("zero-shot verdict: "))
    word = "better" if best["bbox_AP50"] > val[0]["bbox_AP50"] else "NOT better"
    assert verdict.startswith(
        f"zero-shot verdict: {word}: best validation bbox_AP50 {best['bbox_AP50']:.4f} "
        f"(step {best['step']}) vs zero-shot {val[0]['bbox_AP50']:.4f}"
    )
    assert f"best weights: {tmp_path / 'r' / 'checkpoints' / 'best'}" in verdict


def test_no_zero_shot_validation_without_validation(dataset, tmp_path, capsys):
    args = [a for a in ARGS if not a.startswith("val.every_epochs")] + ["val.every_epochs=0"]
    assert main(["train", "--data", str(dataset), f"output_dir={tmp_path}", "run_name=r", *args]) == 0
    assert all(r["kind"] == "train" for r in read_metrics(tmp_path / "r" / "metrics.jsonl"))
    assert "zero-shot verdict" not in capsys.readouterr().out


def test_the_curve_draws_the_metric_panel_with_the_zero_shot_line(tmp_path):
    records = [{"kind": "val", "step": 0, "loss": 9.0, "bbox_AP": 0.1}]
    records += [
        {"kind": "train", "step": s, "loss": 10.0 - s, "loss_ce": 1.0, "loss_bbox": 0.5} for s in (1, 2)
    ]
    records += [{"kind": "val", "step": 2, "loss": 7.0, "bbox_AP": 0.3}]
    without = Image.open(plot_loss_curve(records, tmp_path / "a.png"))
    with_metric = Image.open(plot_loss_curve(records, tmp_path / "b.png", "bbox_AP"))
    # 3 panels (loss, ce, bbox) -> 4: one more column of the same height
    assert with_metric.height == without.height and with_metric.width > without.width
    unmeasured = Image.open(plot_loss_curve(records, tmp_path / "c.png", "segm_AP"))
    assert unmeasured.size == without.size
