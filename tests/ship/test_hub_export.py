"""`sam3tune export --format hub`: the repository folder of a run, its model card, and the upload."""

import json
from pathlib import Path
from typing import ClassVar

import pytest
import yaml
from safetensors.torch import load_file

from sam3tune.cli import main
from sam3tune.config import load_config
from sam3tune.data import DataConfig
from sam3tune.errors import UserError
from sam3tune.eval.api import evaluate_model
from sam3tune.eval.config import EvalConfig
from sam3tune.ship import hub
from sam3tune.ship.hub import NotLoggedInError, export_hub_folder, push_folder
from sam3tune.train.config import TrainConfig
from sam3tune.train.recipe import train
from tests.train.coco_fixture import write_dataset

FAST = [
    "model.name=tiny", "loop.num_workers=0", "loop.batch_size=2", "loop.epochs=1", "val.every_epochs=1",
    "val.eval.num_workers=0",
]  # fmt: skip


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("data"), train=4, valid=3)


def _run(dataset, output, name, *extra):
    config = load_config(
        TrainConfig, None, [f"data.root={dataset}", f"output_dir={output}", f"run_name={name}", *FAST, *extra]
    )
    return train(config).run_dir


@pytest.fixture(scope="module")
def full_run(dataset, tmp_path_factory):
    """A full fine-tune with validation, evaluated against its starting model into RUN/eval."""
    run = _run(dataset, tmp_path_factory.mktemp("runs"), "full")
    evaluate_model(
        str(run / "model"),
        DataConfig(root=dataset, val="valid"),
        run / "eval",
        EvalConfig(num_workers=0),
        baseline="tiny",
        device="cpu",
        progress=False,
    )
    return run


def test_eval_of_a_run_against_its_starting_model_carries_the_verdict(full_run):
    report = json.loads((full_run / "eval" / "eval.json").read_text())
    verdict = report["verdict"]
    tuned, zero = report["model"]["summary"]["bbox_AP"], report["baseline"]["summary"]["bbox_AP"]
    assert verdict["metric"] == "bbox_AP" and verdict["tuned"] == tuned and verdict["zero_shot"] == zero
    assert verdict["better"] == (tuned > zero)
    markdown = (full_run / "eval" / "eval.md").read_text()
    assert f"**{verdict['line']}**" in markdown and verdict["line"].startswith("zero-shot verdict: ")
    # a run's model next to the model it started from: columns "tuned" / "zero-shot", not their paths
    assert (report["model"]["label"], report["baseline"]["label"]) == ("tuned", "zero-shot")
    assert str(full_run) not in next(line for line in markdown.splitlines() if line.startswith("| metric"))


def test_eval_against_another_baseline_gives_no_verdict(full_run, dataset, tmp_path):
    evaluate_model(
        str(full_run / "model"),
        DataConfig(root=dataset, val="valid"),
        tmp_path,
        EvalConfig(num_workers=0, iou_types=["bbox"]),
        baseline="small",
        device="cpu",
        progress=False,
    )
    assert "verdict" not in json.loads((tmp_path / "eval.json").read_text())


def test_hub_folder_of_a_full_run(full_run, dataset, tmp_path):
    out = export_hub_folder(full_run, tmp_path / "repo")
    names = {p.name for p in out.iterdir()}
    expected = {
        "config.json",
        "model.safetensors",
        "sam3tune_tokenizer.json",
        "preprocessor_config.json",
        "README.md",
        "training_config.yaml",
        "loss_curve.png",
        "eval.json",
    }
    assert expected <= names and "adapter_config.json" not in names
    weights, source = (
        load_file(out / "model.safetensors"),
        load_file(full_run / "model" / "model.safetensors"),
    )
    assert weights.keys() == source.keys() and all((weights[k] == source[k]).all() for k in weights)
    processor = json.loads((out / "preprocessor_config.json").read_text())
    assert processor["size"] == {"height": 64, "width": 64} and processor["mask_size"] == {
        "height": 32,
        "width": 32,
    }
    assert processor["image_mean"] == processor["image_std"] == [0.5, 0.5, 0.5]

    card = (out / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front["license"] == "unknown" and front["library_name"] == "transformers"
    assert "base_model" not in front  # `tiny` is not a hub id
    report = json.loads((full_run / "eval" / "eval.json").read_text())
    assert f"**Evaluation: {report['verdict']['line']}**" in card
    assert "**Validation during training: zero-shot verdict: " in card
    tuned, zero = report["model"]["summary"]["bbox_AP50"], report["baseline"]["summary"]["bbox_AP50"]
    assert f"| box AP50 | {100 * zero:.1f} | {100 * tuned:.1f} | {100 * (tuned - zero):+.1f} |" in card
    for category in ("red_block", "blue-block"):  # per-category rows, data table with prompts
        assert f"| {category} | " in card
    assert "| train | 4 |" in card and "| valid | 3 |" in card
    assert "| fine-tuning | full |" in card and "![loss curve](loss_curve.png)" in card
    assert 'Sam3Model.from_pretrained("REPO_ID")' in card
    for path in (full_run.parent, dataset):  # names, not the absolute paths of this machine
        assert str(path) not in card


def test_hub_folder_of_a_lora_run_holds_the_adapters(dataset, tmp_path):
    run = _run(dataset, tmp_path, "lora", "model.finetune.mode=lora", "val.every_epochs=0")
    out = export_hub_folder(run, tmp_path / "repo")
    names = {p.name for p in out.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= names
    assert "model.safetensors" not in names
    card = (out / "README.md").read_text()
    assert "library_name: peft" in card and "PeftModel.from_pretrained" in card
    assert "No evaluation against zero-shot was recorded" in card  # no validation, no eval report
    merged = export_hub_folder(run, tmp_path / "merged", weights="merged")
    assert (merged / "model.safetensors").is_file()


def test_a_run_without_its_exported_weights_is_refused(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("model:\n  name: tiny\n")
    with pytest.raises(hub.HubExportError, match=r"model lacks config.json, model.safetensors"):
        export_hub_folder(run, tmp_path / "repo")
    with pytest.raises(hub.HubExportError, match=r"adapters exist only for model\.finetune\.mode=lora"):
        export_hub_folder(run, tmp_path / "repo", weights="adapters")
    with pytest.raises(UserError, match="not a sam3tune run directory"):
        export_hub_folder(tmp_path, tmp_path / "repo")


class _RecordingApi:
    """Stands in for huggingface_hub.HfApi: records what would be uploaded."""

    calls: ClassVar[list] = []

    def __init__(self, token="hf_test"):
        self.token = token

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        files = sorted(str(p.relative_to(folder_path)) for p in Path(folder_path).rglob("*") if p.is_file())
        self.calls.append(("upload_folder", repo_id, files))


def test_push_uploads_every_file_of_the_folder(full_run, tmp_path):
    out = export_hub_folder(full_run, tmp_path / "repo")
    _RecordingApi.calls = []
    url = push_folder(out, "me/tiny-sam3", private=True, api_factory=_RecordingApi)
    assert url == "https://huggingface.co/me/tiny-sam3"
    (create, repo, options), (upload, repo2, files) = _RecordingApi.calls
    assert (create, repo, options["private"], upload, repo2) == (
        "create_repo",
        "me/tiny-sam3",
        True,
        "upload_folder",
        "me/tiny-sam3",
    )
    assert files == sorted(p.name for p in out.iterdir())


def test_push_without_a_login_says_how_to_log_in(full_run, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(hub, "_stored_token", lambda: None)
    _RecordingApi.calls = []
    with pytest.raises(NotLoggedInError, match="hf auth login"):
        push_folder(tmp_path, "me/x", api_factory=lambda: _RecordingApi(token=None))
    assert _RecordingApi.calls == []

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", lambda: _RecordingApi(token=None))
    status = main(["export", "--format", "hub", str(full_run), str(tmp_path / "repo"), "--push", "me/x"])
    assert status == 3
    assert "not logged in to the Hugging Face Hub" in capsys.readouterr().err
    assert (tmp_path / "repo" / "README.md").is_file()  # the folder is written before the upload


def test_cli_hub_export_prints_the_folder(full_run, tmp_path, capsys):
    assert (
        main(["export", "--format", "hub", str(full_run), str(tmp_path / "repo"), "hub.weights=merged"]) == 0
    )
    assert "README.md" in capsys.readouterr().out
    assert main(["export", "--format", "hub", str(full_run), str(tmp_path / "r2"), "hub.weights=bad"]) == 2
