"""What ``train`` says about hostile data (issue 14): problems in the log, refusals before any run folder."""

import json
import logging

from coco_fixture import write_dataset

from sam3tune.cli import main
from sam3tune.config import load_config
from sam3tune.errors import EXIT_BAD_INPUT
from sam3tune.train.config import TrainConfig
from sam3tune.train.recipe import train

FAST = ["model.name=tiny", "loop.num_workers=0", "loop.batch_size=2", "loop.epochs=2", "val.every_epochs=0"]


def _rewrite(root, change):
    path = root / "train" / "_annotations.coco.json"
    coco = json.loads(path.read_text())
    change(coco)
    path.write_text(json.dumps(coco))


def test_objects_the_transforms_drop_are_logged_each_epoch(tmp_path, caplog):
    root = write_dataset(tmp_path / "data", train=4, valid=0)

    def sliver(coco):  # a box 0.001 px wide: empty once resized, every epoch
        coco["annotations"][0].update(bbox=[10, 10, 0.001, 20], segmentation=[])

    _rewrite(root, sliver)
    config = load_config(TrainConfig, None, [f"data.root={root}", f"output_dir={tmp_path / 'runs'}", *FAST])
    with caplog.at_level(logging.WARNING, logger="sam3tune.train.loop"):
        result = train(config)
    assert result.status == "completed"
    lines = [r.getMessage() for r in caplog.records if "the transforms left out" in r.getMessage()]
    assert [line.split(":")[0] for line in lines] == ["epoch 1", "epoch 2"]
    assert all("left out 1 object(s) whose box became empty" in line for line in lines)


def test_label_problems_are_logged_when_training_starts(tmp_path, caplog):
    root = write_dataset(tmp_path / "data", train=4, valid=0)

    def duplicate(coco):
        coco["annotations"].append({**coco["annotations"][0], "id": 999})

    _rewrite(root, duplicate)
    overrides = [f"data.root={root}", f"output_dir={tmp_path / 'runs'}", *FAST, "loop.epochs=1"]
    config = load_config(TrainConfig, None, overrides)
    with caplog.at_level(logging.WARNING):
        train(config)
    assert "annotation 999 (image 1) repeats annotation 1" in caplog.text


def test_colliding_prompts_stop_train_before_a_run_folder_exists(tmp_path, capsys):
    root = write_dataset(tmp_path / "data", train=4, valid=0)

    def collide(coco):
        coco["categories"][1]["name"] = "Red Block"  # category 1 is "red_block"

    _rewrite(root, collide)
    status = main(["train", f"output_dir={tmp_path / 'runs'}", *FAST, "--data", str(root)])
    assert status == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "category 1 'red_block' -> 'red block' and category 2 'Red Block' -> 'red block'" in err
    assert not (tmp_path / "runs").exists()
