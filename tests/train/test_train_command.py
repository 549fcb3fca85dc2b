"""``sam3tune train`` argument handling and exit statuses."""

import pytest
from coco_fixture import write_dataset

from sam3tune.cli import main
from sam3tune.train.metrics_log import read_metrics


def test_missing_dataset_and_bad_keys_exit_2_with_a_message(tmp_path, capsys):
    assert main(["train", "model.name=tiny"]) == 2
    assert "pass --data PATH" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path), "optim.lr_vison=1e-4"]) == 2
    assert "unknown config key(s) optim.lr_vison" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path), "--config", "x.yaml"]) == 2
    assert "drop --config" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "nothing")]) == 2
    assert "not a sam3tune run directory" in capsys.readouterr().err


def test_a_diverging_run_exits_3_and_leaves_a_resumable_checkpoint(tmp_path, capsys):
    data = write_dataset(tmp_path / "data", train=4, valid=0)
    status = main(
        [
            "train", "--data", str(data), f"output_dir={tmp_path}", "run_name=nan", "model.name=tiny",
            "loop.num_workers=0", "loop.batch_size=2", "loop.epochs=3", "loop.max_consecutive_nonfinite=2",
            "optim.lr_transformer=1e38", "schedule.warmup_steps=0",
        ]
    )  # fmt: skip
    assert status == 3
    assert "NaN/inf for 2 optimizer steps in a row" in capsys.readouterr().err
    records = read_metrics(tmp_path / "nan" / "metrics.jsonl")
    # step 1 has a finite loss, its update at lr 1e38 ruins the weights (an infinite lr is refused)
    assert [r["skipped"] for r in records] == [False, True, True]
    assert (tmp_path / "nan" / "checkpoints" / "last" / "meta.json").is_file()


@pytest.mark.parametrize("flag", ["--help"])
def test_help_lists_the_options(flag, capsys):
    with pytest.raises(SystemExit):
        main(["train", flag])
    out = capsys.readouterr().out
    assert "--resume RUN_DIR" in out and "key=value" in out
