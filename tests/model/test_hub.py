"""Hub ids and mistyped model names: one actionable message per failure (huggingface_hub errors simulated)."""

import huggingface_hub
import pytest
from httpx2 import Request, Response
from huggingface_hub import errors

from sam3tune.model import load_model
from sam3tune.model.hub import HUB_FILES, ModelSpecError, is_hub_id


def _response(status: int) -> Response:
    return Response(status, request=Request("GET", "https://huggingface.co/api/models/facebook/sam3"))


def _hub_raises(monkeypatch, error: Exception, token: str | None = None) -> list:
    calls = []

    def snapshot_download(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        raise error

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: token)
    return calls


def test_offline_without_cache(monkeypatch):
    calls = _hub_raises(monkeypatch, errors.LocalEntryNotFoundError("cannot find the requested files"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(
        ModelSpecError, match="cannot be reached and facebook/sam3 is not in the local hub cache"
    ):
        load_model("facebook/sam3")
    assert calls[0][0] == "facebook/sam3" and calls[0][1]["allow_patterns"] == HUB_FILES
    assert not any(p.endswith(".pt") or p == "*" for p in HUB_FILES)  # never a pickle
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(
        ModelSpecError, match=r"HF_HUB_OFFLINE is set .*hf download facebook/sam3.*local folder"
    ):
        load_model("facebook/sam3")


def test_repository_not_found(monkeypatch):
    _hub_raises(monkeypatch, errors.RepositoryNotFoundError("404 Client Error", response=_response(404)))
    with pytest.raises(ModelSpecError, match=r"no repository 'facebok/sam3' .*typo .*facebook/sam3"):
        load_model("facebok/sam3")


def test_gated_without_token(monkeypatch):
    _hub_raises(monkeypatch, errors.GatedRepoError("401 gated", response=_response(401)), token=None)
    with pytest.raises(
        ModelSpecError,
        match=r"gated and you are not logged in: accept its licence on "
        r"https://huggingface.co/facebook/sam3 .*hf auth login",
    ):
        load_model("facebook/sam3")


def test_gated_with_a_token_that_has_no_access(monkeypatch):
    _hub_raises(monkeypatch, errors.GatedRepoError("403 gated", response=_response(403)), token="hf_x")
    with pytest.raises(ModelSpecError, match=r"gated and your token has no access to it: accept the licence"):
        load_model("facebook/sam3")


@pytest.mark.parametrize("name", ["tinyy", "sam3", "sam3_random", "/no/such/folder", "../up/and/away"])
def test_a_mistyped_name_lists_the_named_architectures(monkeypatch, name):
    calls = _hub_raises(monkeypatch, AssertionError("the hub must not be asked"))
    with pytest.raises(
        ModelSpecError, match=r"no such architecture, folder or hub id: .*tiny, .*sam3-random"
    ):
        load_model(name)
    assert calls == []


def test_hub_id_shape():
    assert is_hub_id("facebook/sam3") and is_hub_id("my-org/sam3.finetuned_v2")
    for spec in ("tiny", "a/b/c", "/abs/path", "./rel", "org/", "/name", "org/../x"):
        assert not is_hub_id(spec), spec


def test_doctor_reports_the_hub_message(monkeypatch, tmp_path, capsys):
    from sam3tune.cli import main
    from tests.train.coco_fixture import write_dataset

    _hub_raises(monkeypatch, errors.LocalEntryNotFoundError("cannot find the requested files"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    data = write_dataset(tmp_path / "data", train=2, valid=0)
    status = main(["doctor", "--data", str(data), "--model", "facebook/sam3", "loop.device=cpu"])
    out = capsys.readouterr().out
    assert status == 1
    assert "model_build_failed" in out and "not in the local hub cache" in out


def test_model_label_is_a_hub_id_or_a_short_name(tmp_path):
    from sam3tune.demo.base import BASE_DIR
    from sam3tune.model.hub import model_label

    run = tmp_path / "fruits-run"
    (run / "model").mkdir(parents=True)
    (run / "config.yaml").write_text("run_name: fruits-run\n")
    (tmp_path / "my-sam3").mkdir()
    assert model_label("facebook/sam3") == "facebook/sam3" and model_label("tiny") == "tiny"
    assert model_label(run / "model") == "fruits-run/model"
    assert model_label(tmp_path / "my-sam3") == "my-sam3"
    assert model_label(BASE_DIR) == "sam3tune/demo/base"  # the demo base, wherever it is installed
