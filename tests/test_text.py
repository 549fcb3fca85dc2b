"""Text is text: every command-line value and every name read from data comes back exactly, for all of
Unicode (characters outside the Basic Multilingual Plane, lone surrogates from file names that are not
UTF-8, line separators, NUL), in paths, prompts and category names."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from sam3tune.cli import main
from sam3tune.config import apply_overrides, as_overrides, load_config, save_config, with_shortcuts
from sam3tune.train.config import TrainConfig
from tests.data.conftest import write_image
from tests.train.coco_fixture import write_dataset

EMOJI = "\U0001f34e"  # red apple, outside the Basic Multilingual Plane
TEXTS = [
    f"{EMOJI} apple",
    "\U0010fffd last plane",
    "caf\u00e9 \u4e2d\u6587 \u0645\u0631\u062d\u0628\u0627",
    "file\udcffname",  # what Python makes of a byte 0xff in a file name (surrogateescape)
    "line\u2028separator \x85 next-line",
    "byte\ufefforder",
    'quotes " and \\ backslash \\U0001F34E',
    "nul\x00tab\t",
    "\\\\\U0001f34e",
]


@pytest.mark.parametrize("text", TEXTS)
def test_shortcut_values_come_back_exactly(text):
    """``--data PATH`` / ``--prompt TEXT`` become ``key=value`` overrides that parse back to the text."""
    (override,) = as_overrides({"prompt": text})
    assert apply_overrides({}, [override])["prompt"] == text
    (listed,) = with_shortcuts([], {"prompts": [text, "plain"]})
    assert apply_overrides({}, [listed])["prompts"] == [text, "plain"]


@pytest.mark.parametrize("raw", ["data\udcff/x", f"[{EMOJI} a, b\udc80]", "{k: v\udcfe}"])
def test_typed_overrides_keep_characters_yaml_cannot_hold(raw):
    parsed = apply_overrides({}, [f"key={raw}"])["key"]
    expected = yaml.safe_load(raw.replace("\udcff", "X").replace("\udc80", "Y").replace("\udcfe", "Z"))
    restore = {"X": "\udcff", "Y": "\udc80", "Z": "\udcfe"}

    def back(value):
        if isinstance(value, str):
            return "".join(restore.get(c, c) for c in value)
        if isinstance(value, list):
            return [back(v) for v in value]
        return {back(k): back(v) for k, v in value.items()}

    assert parsed == back(expected)


def test_config_file_round_trip_with_any_text(tmp_path):
    config = load_config(
        TrainConfig,
        None,
        with_shortcuts([], {"data.root": f"/data/{EMOJI}/file\udcffname", "run_name": f"run {EMOJI}\u2028"}),
    )
    save_config(config, tmp_path / "config.yaml", comment=f"a comment with {EMOJI}")
    again = load_config(TrainConfig, tmp_path / "config.yaml")
    assert again.data.root == Path(f"/data/{EMOJI}/file\udcffname")
    assert again.run_name == f"run {EMOJI}\u2028"


def _coco_with_names(root: Path, names: list[str]) -> Path:
    write_dataset(root, train=3, valid=0)
    path = root / "train" / "_annotations.coco.json"
    coco = json.loads(path.read_text(encoding="utf-8"))
    coco["categories"] = [{"id": i + 1, "name": n} for i, n in enumerate(names)]
    path.write_text(json.dumps(coco, ensure_ascii=False), encoding="utf-8")
    return root


def test_inspect_a_folder_and_categories_named_outside_the_bmp(tmp_path, capsys):
    names = [f"{EMOJI} Apple", "\U0001f95d kiwi"]
    root = _coco_with_names(tmp_path / f"fruit {EMOJI}", names)
    assert main(["data", "inspect", str(root), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    (split,) = report["splits"]
    assert report["path"] == str(root) and split["ok"]
    assert [c["name"] for c in split["categories"]] == names
    assert [c["prompt"] for c in split["categories"]] == [f"{EMOJI} apple", "\U0001f95d kiwi"]


def test_yolo_and_semantic_names_outside_the_bmp(tmp_path):
    from sam3tune.data.coco import load_split
    from sam3tune.data.layout import resolve_split
    from sam3tune.data.semantic import load_semantic_split

    yolo = tmp_path / f"yolo {EMOJI}"
    (yolo / "labels" / "train").mkdir(parents=True)
    (yolo / "labels" / "train" / "a.txt").write_text("0 0.5 0.5 0.5 0.5\n", encoding="utf-8")
    write_image(yolo / "images" / "train" / "a.png", 40, 20)
    (yolo / "data.yaml").write_text(
        yaml.safe_dump({"train": "images/train", "names": [f"{EMOJI} fruit", "caf\u00e9"]}), encoding="utf-8"
    )
    assert load_split(resolve_split(yolo, "train"), progress=False).categories == {
        0: f"{EMOJI} fruit",
        1: "caf\u00e9",
    }
    (yolo / "data.yaml").unlink()
    (yolo / "classes.txt").write_text(f"{EMOJI} fruit\n\U0010fffd\n", encoding="utf-8")
    (yolo / "labels" / "train" / "a.txt").write_text("1 0.5 0.5 0.5 0.5\n", encoding="utf-8")
    assert load_split(resolve_split(yolo, "train"), progress=False).categories == {
        0: f"{EMOJI} fruit",
        1: "\U0010fffd",
    }

    semantic = tmp_path / f"sem {EMOJI}"
    (semantic / "train" / "labels").mkdir(parents=True)
    Image.fromarray(np.ones((8, 8), np.uint8), mode="L").save(semantic / "train" / "labels" / "a.png")
    write_image(semantic / "train" / "images" / "a.png", 8, 8)
    (semantic / "semantic.yaml").write_text(yaml.safe_dump({"names": {1: f"{EMOJI} Road"}}), encoding="utf-8")
    split = load_semantic_split(semantic, "train")
    assert split.classes == {1: f"{EMOJI} Road"} and split.prompts == {1: f"{EMOJI} road"}


def test_predict_prompt_and_image_folder_outside_the_bmp(tmp_path):
    folder = tmp_path / f"photos {EMOJI}"
    write_image(folder / f"tray {EMOJI}.png", 40, 30)
    out = tmp_path / f"out {EMOJI}"
    prompt = f"{EMOJI} apple"
    assert main(["predict", "--model", "tiny", "--prompt", prompt, str(folder), "--out", str(out)]) == 0
    index = json.loads((out / "index.json").read_text(encoding="utf-8"))
    assert [c["name"] for c in index["categories"]] == [prompt]
    (image,) = index["images"]
    assert image["file_name"] == str(folder / f"tray {EMOJI}.png")
    assert (out / image["overlay"]).is_file() and image["overlay"] == f"overlays/tray {EMOJI}.png"


def test_train_on_a_folder_named_outside_the_bmp_keeps_its_path(tmp_path):
    root = _coco_with_names(tmp_path / f"data {EMOJI}", [f"{EMOJI} red", "blue \U0001f535"])
    runs = tmp_path / f"runs {EMOJI}"
    status = main(
        [
            "train", "--data", str(root), "model.name=tiny", "loop.max_steps=1", "loop.num_workers=0",
            "val.every_epochs=0", "export=false", f"output_dir={runs}", f"run_name=r{EMOJI}",
        ]
    )  # fmt: skip
    assert status == 0
    saved = load_config(TrainConfig, runs / f"r{EMOJI}" / "config.yaml")
    assert saved.data.root == root and saved.run_name == f"r{EMOJI}"


@pytest.mark.skipif(sys.platform != "linux", reason="file names as bytes")
def test_a_file_name_that_is_not_utf8_on_the_command_line(tmp_path):
    """A byte 0xff in a folder name reaches the program as a lone surrogate; the folder is found, and
    messages that name it print the byte back instead of failing to encode."""
    root = os.fsencode(tmp_path) + b"/data\xffset"
    write_dataset(Path(os.fsdecode(root)), train=2, valid=0)
    done = subprocess.run(
        [sys.executable, "-m", "sam3tune", "data", "inspect", root],
        capture_output=True,
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert b"dataset " + root in done.stdout
    done = subprocess.run(
        [sys.executable, "-m", "sam3tune", "data", "inspect", root + b"/nothing"],
        capture_output=True,
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
        timeout=300,
    )
    assert root + b"/nothing" in done.stdout + done.stderr
    assert b"Traceback" not in done.stderr
