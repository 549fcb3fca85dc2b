"""``sam3tune suite``: configs, ordinary run folders, skipping finished steps, resuming, refusing a changed
suite; one dataset, two seeds, the ``tiny`` model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from sam3tune.cli import main
from sam3tune.config import ConfigError, InvalidValue, load_config
from sam3tune.suite import SuiteConfig, SuiteDataset, run_suite
from sam3tune.suite.reference import load_reference
from sam3tune.suite.runner import run_config
from tests.train.coco_fixture import write_split

RUN = [
    "model.name=tiny",
    "loop.num_workers=0",
    "loop.batch_size=2",
    "loop.epochs=2",
    "loop.checkpoint_every_steps=1",
]


def suite_config(root: Path, out: Path, **changes) -> SuiteConfig:
    values = {
        "datasets": [{"name": "blocks", "root": str(root)}],
        "seeds": [1, 2],
        "shots": 2,
        "base_overrides": RUN,
        "eval": {"batch_size": 4, "num_workers": 0, "iou_types": ["bbox"]},
        "device": "cpu",
        "output_dir": str(out),
        **changes,
    }
    return load_config(SuiteConfig, None, [f"{k}={json.dumps(v)}" for k, v in values.items()])


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A suite run to the end once: (data root, output folder, lines it printed)."""
    base = tmp_path_factory.mktemp("suite")
    write_split(base / "data" / "train", 8, seed=0)
    write_split(base / "data" / "test", 4, seed=1)
    lines: list[str] = []
    outcome = run_suite(suite_config(base / "data", base / "out"), say=lines.append)
    assert outcome.status == "completed" and not outcome.failed
    return base / "data", base / "out", lines


def copy(finished, tmp_path) -> tuple[Path, Path]:
    root, out, _ = finished
    shutil.copytree(out, tmp_path / "out")
    return root, tmp_path / "out"


def test_each_step_is_an_ordinary_folder_and_the_table_reads_their_reports(finished):
    root, out, lines = finished
    assert lines[0].endswith("5 steps, 0 finished, 5 to run")
    zero = json.loads((out / "blocks" / "zero-shot" / "eval.json").read_text())["model"]["summary"]
    assert zero["bbox_AP"] is not None
    summary = json.loads((out / "results.json").read_text())
    row = summary["datasets"][0]
    assert row["zero_shot"] == zero["bbox_AP"]
    for seed in (1, 2):
        run = out / "blocks" / f"seed-{seed}"
        config = yaml.safe_load((run / "config.yaml").read_text())
        assert config["data"]["shots"] == 2 and config["data"]["shots_seed"] == seed
        assert config["data"]["root"] == str(root) and config["val"]["every_epochs"] == 0
        assert (run / "model" / "config.json").is_file() and (run / "metrics.jsonl").is_file()
        tuned = json.loads((run / "eval" / "eval.json").read_text())["model"]["summary"]["bbox_AP"]
        assert row["tuned"]["per_seed"][str(seed)] == tuned
    assert summary["suite"]["complete"] is True
    assert "| blocks |" in (out / "results.md").read_text()


def test_a_finished_suite_runs_nothing_again(finished, tmp_path, monkeypatch):
    root, out = copy(finished, tmp_path)
    stamp = (out / "blocks" / "seed-1" / "eval" / "eval.json").stat().st_mtime_ns

    def refuse(*args, **kwargs):
        raise AssertionError("a finished step ran again")

    monkeypatch.setattr("sam3tune.train.recipe.train", refuse)
    monkeypatch.setattr("sam3tune.eval.api.evaluate_model", refuse)
    lines: list[str] = []
    outcome = run_suite(suite_config(root, out), say=lines.append)
    assert lines == [f"suite {out}: 1 dataset(s) x 2 seed(s), 2-shot; 5 steps, 5 finished, 0 to run"]
    assert outcome.summary["suite"]["complete"]
    assert (out / "blocks" / "seed-1" / "eval" / "eval.json").stat().st_mtime_ns == stamp


def test_a_run_stopped_after_a_checkpoint_continues_from_it(finished, tmp_path):
    root, out = copy(finished, tmp_path)
    run = out / "blocks" / "seed-2"
    shutil.rmtree(run / "model")  # as if killed after its last checkpoint, before the export
    shutil.rmtree(run / "eval")
    before = json.loads((out / "results.json").read_text())["datasets"][0]["tuned"]["per_seed"]["2"]
    lines: list[str] = []
    outcome = run_suite(suite_config(root, out), say=lines.append)
    assert lines[0].endswith("5 steps, 3 finished, 2 to run")
    assert any(f"continuing {run} from its last checkpoint" in line for line in lines)
    assert (run / "model" / "config.json").is_file()
    assert outcome.summary["datasets"][0]["tuned"]["per_seed"]["2"] == before  # the same weights
    assert (run / "resumes.jsonl").is_file()


def test_a_run_killed_before_its_first_checkpoint_is_moved_aside_and_started_again(finished, tmp_path):
    root, out = copy(finished, tmp_path)
    run = out / "blocks" / "seed-1"
    shutil.rmtree(run)
    run.mkdir()
    (run / "metrics.jsonl").write_text("")
    lines: list[str] = []
    outcome = run_suite(suite_config(root, out), say=lines.append)
    assert (out / "blocks" / "seed-1.incomplete-1" / "metrics.jsonl").is_file()  # kept, not deleted
    assert outcome.status == "completed" and (run / "model" / "config.json").is_file()


def test_an_interrupted_suite_writes_what_it_has_and_the_next_run_finishes(finished, tmp_path, monkeypatch):
    root, out = copy(finished, tmp_path)
    shutil.rmtree(out / "blocks" / "seed-2")

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("sam3tune.train.recipe.train", stop)
    outcome = run_suite(suite_config(root, out), say=lambda line: None)
    assert outcome.status == "interrupted"
    row = json.loads((out / "results.json").read_text())["datasets"][0]
    assert row["tuned"]["n"] == 1 and row["missing_seeds"] == [2]
    monkeypatch.undo()
    assert run_suite(suite_config(root, out), say=lambda line: None).summary["suite"]["complete"]


def test_changed_settings_are_refused_added_seeds_are_run(finished, tmp_path, monkeypatch):
    root, out = copy(finished, tmp_path)
    with pytest.raises(ConfigError, match=r"shots differ"):
        run_suite(suite_config(root, out, shots=3), say=lambda line: None)
    with pytest.raises(ConfigError, match=r"datasets\[blocks\]"):
        run_suite(suite_config(root, out, datasets=[{"name": "blocks", "root": str(root), "test": "train"}]))
    base = yaml.safe_load((out / "base_config.yaml").read_text())
    base["loop"]["seed"] = 5  # as if the base config file had been edited since
    (out / "base_config.yaml").write_text(yaml.safe_dump(base))
    with pytest.raises(ConfigError, match=r"base TrainConfig loop\.seed"):
        run_suite(suite_config(root, out), say=lambda line: None)
    base["loop"]["seed"] = 123
    (out / "base_config.yaml").write_text(yaml.safe_dump(base))
    ran = []
    monkeypatch.setattr(
        "sam3tune.train.recipe.train", lambda config, resume=None: ran.append(config) or _done()
    )
    monkeypatch.setattr("sam3tune.eval.api.evaluate_model", lambda *a, **k: None)
    run_suite(suite_config(root, out, seeds=[1, 2, 7]), say=lambda line: None)
    assert [c.data.shots_seed for c in ran] == [7]


def _done():
    class Result:
        status = "completed"

    return Result()


def test_run_config_and_validation(tmp_path):
    suite = suite_config(tmp_path, tmp_path / "out", presampled=True)
    dataset = SuiteDataset(
        name="odinw", root="odinw/x", train="train/fewshot_train_shot{shots}_seed{seed}.json"
    )
    config = run_config(suite, dataset, 30)
    assert config.data.train == "train/fewshot_train_shot2_seed30.json" and config.data.shots is None
    assert config.output_dir == tmp_path / "out" / "odinw" and config.run_name == "seed-30"
    assert config.model.name == "tiny" and config.val.every_epochs == 0 and config.loop.device == "cpu"
    with pytest.raises(InvalidValue, match="val='test': must differ from test"):
        SuiteDataset(name="a", root="a", val="test")
    with pytest.raises(InvalidValue, match="name"):
        SuiteDataset(name="..", root="a")
    with pytest.raises(ConfigError, match="names must be unique"):
        suite_config(tmp_path, tmp_path, datasets=[{"name": "a", "root": "a"}, {"name": "a", "root": "b"}])
    with pytest.raises(ConfigError, match="seeds"):
        suite_config(tmp_path, tmp_path, seeds=[1, 1])


def test_datasets_under_lists_every_folder_with_a_train_split(tmp_path):
    for name in ("b-set", "a-set"):
        (tmp_path / "all" / name / "train").mkdir(parents=True)
    (tmp_path / "all" / "notes").mkdir()
    suite = load_config(SuiteConfig, None, [f"datasets_under={tmp_path / 'all'}"])
    assert [(d.name, d.root) for d in suite.all_datasets()] == [
        ("a-set", str(tmp_path / "all" / "a-set")),
        ("b-set", str(tmp_path / "all" / "b-set")),
    ]


def test_command_line(tmp_path, capsys):
    assert main(["suite"]) == 2
    assert "give the suite file" in capsys.readouterr().err
    (tmp_path / "s.yaml").write_text("datasets: [{name: a, root: a}]\nshotz: 3\n")
    assert main(["suite", "--config", str(tmp_path / "s.yaml")]) == 2
    assert "unknown config key(s) shotz" in capsys.readouterr().err


def test_the_shipped_example_suites_load_and_match_their_references():
    examples = Path(__file__).resolve().parents[2] / "docs" / "examples" / "suites"
    odinw = load_config(SuiteConfig, examples / "odinw13-10shot.yaml")
    reference = load_reference(odinw.reference)
    assert sorted(d.name for d in odinw.datasets) == sorted(reference.datasets)
    assert reference.mismatches(odinw.metric, odinw.shots, [d.name for d in odinw.datasets]) == []
    first = run_config(odinw, odinw.datasets[0], 30)
    assert first.data.train == "train/fewshot_train_shot10_seed30.json" and first.data.shots is None
    assert first.data.prompts is not None and (examples.parents[2] / first.data.prompts).is_file()
    rf100 = load_config(SuiteConfig, examples / "rf100vl-10shot.yaml")
    assert rf100.presampled and load_reference(rf100.reference).name == "RF100-VL"


def test_a_dataset_whose_files_are_refused_fails_alone(finished, tmp_path):
    root, out = copy(finished, tmp_path)
    datasets = [{"name": "blocks", "root": str(root)}, {"name": "lost", "root": str(tmp_path / "nowhere")}]
    lines: list[str] = []
    outcome = run_suite(suite_config(root, out, datasets=datasets), say=lines.append)
    assert outcome.status == "completed"
    assert set(outcome.failed) == {"lost zero-shot", "lost 1", "lost 2"}
    assert "bad data:" in outcome.failed["lost zero-shot"] and "nowhere" in outcome.failed["lost zero-shot"]
    blocks, lost = outcome.summary["datasets"]
    assert blocks["tuned"]["n"] == 2 and lost["tuned"]["n"] == 0 and lost["zero_shot"] is None
    assert "| lost | - | - | - | 0/2 (failed: zero-shot, 1, 2) |" in outcome.table
