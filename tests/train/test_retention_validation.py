"""Retention measured during training: the starting model's answers to the untuned prompts, made before
the first step, are the reference of every validation; the verdict becomes two-sided."""

import pytest
from coco_fixture import write_dataset

from sam3tune.cli import main
from sam3tune.train.metrics_log import read_metrics

ARGS = [
    "model.name=tiny", "loop.num_workers=0", "loop.batch_size=2", "loop.epochs=2", "val.every_epochs=1",
    "val.eval.num_workers=0", "val.eval.iou_types=[bbox]",
    # the random tiny model scores every proposal far below 0.5: a low threshold keeps a reference
    "retention.prompts=[green block, yellow block]", "retention.score_threshold=0.01",
]  # fmt: skip


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("data"), train=4, valid=2)


def test_validation_measures_retention_against_the_starting_model(dataset, tmp_path, capsys):
    status = main(["train", "--data", str(dataset), f"output_dir={tmp_path}", "run_name=r", *ARGS])
    assert status == 0
    val = [r for r in read_metrics(tmp_path / "r" / "metrics.jsonl") if r["kind"] == "val"]
    assert [r["step"] for r in val] == [0, 2, 4]
    assert val[0]["retention_bbox_AP"] == 1.0 and val[0]["retention_bbox_AP50"] == 1.0
    assert all(0.0 <= r["retention_bbox_AP"] <= 1.0 for r in val[1:])
    verdict = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("zero-shot"))
    kept = max(val[1:], key=lambda r: r["bbox_AP"])["retention_bbox_AP"]
    assert f"untuned prompts: keeps {kept:.0%} of the starting model's answers" in verdict


def test_a_tuned_category_as_retention_prompt_is_refused(dataset, tmp_path, capsys):
    args = [*ARGS, "retention.prompts=[red block]"]
    assert main(["train", "--data", str(dataset), f"output_dir={tmp_path}", "run_name=r", *args]) == 2
    assert "retention.prompts ['red block'] are also categories" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
