"""Issue 14, class 4: runs and checkpoints. A refused resume writes nothing; a run folder is locked while
a process trains in it; a corrupt checkpoint is named and resume falls back to `best`; a failed write
names its file; a new run whose set-up fails leaves no folder behind."""

import json
import shutil
import subprocess
import sys
import textwrap

import pytest
from coco_fixture import write_dataset

from sam3tune.cli import main
from sam3tune.train import run_lock as run_lock_module
from sam3tune.train.metrics_log import read_metrics
from sam3tune.train.run_lock import RunLockedError, run_lock

FAST = [
    "model.name=tiny",
    "loop.num_workers=0",
    "loop.batch_size=2",
    "val.eval.num_workers=0",
    "export=false",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished one-epoch run (2 steps, validated at step 2: `last` and `best` at step 2)."""
    root = tmp_path_factory.mktemp("runs")
    data = write_dataset(root / "data", train=4, valid=2)
    args = [
        "train",
        "--data",
        str(data),
        f"output_dir={root}",
        "run_name=run",
        "loop.epochs=1",
        "val.every_epochs=1",
    ]
    assert main([*args, *FAST]) == 0
    return root / "run"


@pytest.fixture
def run(trained, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    return copy


def _snapshot(run_dir):
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


def _train_steps(run_dir):
    return [r["step"] for r in read_metrics(run_dir / "metrics.jsonl") if r["kind"] == "train"]


def test_a_resume_that_breaks_exactness_is_refused_and_writes_nothing(run, capsys):
    before = _snapshot(run)
    assert main(["train", "--resume", str(run), "loop.seed=5", "data.negatives=none", "loop.epochs=2"]) == 2
    err = capsys.readouterr().err
    assert "resume would not be exact: data.negatives ('all' -> 'none'), loop.seed (123 -> 5)" in err
    assert "--allow-inexact-resume" in err
    assert _snapshot(run) == before  # config.yaml, metrics.jsonl, checkpoints: byte for byte


def test_an_inexact_resume_needs_the_flag_and_is_recorded(run):
    assert (
        main(["train", "--resume", str(run), "--allow-inexact-resume", "loop.seed=5", "loop.epochs=2"]) == 0
    )
    (record,) = [json.loads(line) for line in (run / "resumes.jsonl").read_text().splitlines()]
    assert record["exact"] is False and record["step"] == 2 and record["checkpoint"] == "checkpoints/last"
    assert record["changes"] == {"loop.epochs": [1, 2], "loop.seed": [123, 5]}
    assert "seed: 5" in (run / "config.yaml").read_text()
    assert _train_steps(run) == [1, 2, 3, 4]


def test_a_second_process_is_refused_while_one_trains(run, capsys):
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import importlib.util, time
            spec = importlib.util.spec_from_file_location("run_lock", {run_lock_module.__file__!r})
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)  # the module alone: no torch import, a quick start
            with module.run_lock({str(run)!r}):
                print("held", flush=True)
                time.sleep(60)
        """)],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        before = _snapshot(run)
        assert main(["train", "--resume", str(run), "loop.epochs=2"]) == 2
        err = capsys.readouterr().err
        assert f"{run} is in use: another process (pid {holder.pid}) is training in it" in err
        assert _snapshot(run) == before
    finally:
        holder.kill()
        holder.wait()
    # the kernel released the killed holder's lock: no stale lock blocks a resume
    with run_lock(run), pytest.raises(RunLockedError, match="in use"), run_lock(run):
        pass


def test_a_corrupt_last_checkpoint_is_named_and_resume_falls_back_to_best(run, caplog):
    # continue to step 4 without validating: `last` at step 4, `best` still at step 2
    assert main(["train", "--resume", str(run), "loop.epochs=2", "val.every_epochs=0"]) == 0
    last = run / "checkpoints" / "last"
    assert json.loads((last / "meta.json").read_text())["step"] == 4
    weights = last / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # truncated
    assert main(["train", "--resume", str(run), "loop.epochs=3", "val.every_epochs=0"]) == 0
    assert f"checkpoint file {weights} is truncated or corrupt" in caplog.text
    assert "checkpoints/best (step 2) instead" in caplog.text
    assert _train_steps(run) == [1, 2, 3, 4, 5, 6]  # steps 3-4 trained again, logged once
    records = [json.loads(line) for line in (run / "resumes.jsonl").read_text().splitlines()]
    assert [(r["checkpoint"], r["step"], r["exact"]) for r in records] == [
        ("checkpoints/last", 2, True),
        ("checkpoints/best", 2, True),
    ]


def test_when_no_checkpoint_can_be_read_the_files_are_named_and_nothing_changes(run, capsys):
    (run / "checkpoints" / "last" / "training_state.pt").write_bytes(b"not a checkpoint")
    (run / "checkpoints" / "best" / "meta.json").unlink()
    before = _snapshot(run)
    assert main(["train", "--resume", str(run), "loop.epochs=2"]) == 2
    err = capsys.readouterr().err
    assert f"checkpoint file {run}/checkpoints/last/training_state.pt is truncated or corrupt" in err
    assert f"no complete checkpoint at {run}/checkpoints/best" in err
    assert "Nothing was changed in the run directory" in err
    assert _snapshot(run) == before


def test_a_new_run_whose_set_up_fails_leaves_no_folder(trained, tmp_path, capsys):
    data = trained.parent / "data"
    args = ["train", "--data", str(data), f"output_dir={tmp_path}/out", "run_name=r", *FAST]
    assert main([*args, "loop.grad_accum_steps=50"]) == 2  # an epoch of 2 batches: no optimizer step
    assert "loop.grad_accum_steps=50" in capsys.readouterr().err
    assert not (tmp_path / "out" / "r").exists()
    assert main([*args, "run_name=../escaped"]) == 2
    assert "run_name='../escaped': must be one folder name inside output_dir" in capsys.readouterr().err
    assert not (tmp_path / "escaped").exists()


def test_a_failed_write_names_the_file_and_the_reason(trained, tmp_path, capsys, monkeypatch):
    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("sam3tune.train.loop.save_checkpoint", disk_full)
    data = trained.parent / "data"
    args = ["train", "--data", str(data), f"output_dir={tmp_path}", "run_name=r", "loop.epochs=1", *FAST]
    assert main([*args, "val.every_epochs=0"]) == 2
    err = capsys.readouterr().err
    assert f"cannot write {tmp_path}/r/checkpoints/last (output_dir): No space left on device" in err


def test_overrides_may_stand_on_both_sides_of_options(trained, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SAM3TUNE_PROGRESS", raising=False)
    data = trained.parent / "data"
    argv = [
        "train",
        "run_name=both",
        *FAST,
        "--data",
        str(data),
        f"output_dir={tmp_path}",
        "loop.max_steps=1",
    ]
    assert main([*argv, "val.every_epochs=0"]) == 0
    assert _train_steps(tmp_path / "both") == [1]
    err = capsys.readouterr().err  # not a terminal: the epoch's progress is one plain line
    assert "\r" not in err and [line for line in err.splitlines() if line.startswith("epoch 1/1: 1/1 [")]
    with pytest.raises(SystemExit):
        main([*argv, "--no-such-option"])
