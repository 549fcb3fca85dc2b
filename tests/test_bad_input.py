"""Every command with representative bad input of each kind, as a user would type it.

Each case runs ``sam3tune`` in-process (``cli.main``) and asserts what README's "What is refused" promises:
the documented exit status, no traceback, one ``sam3tune COMMAND: message`` line that names the file,
entry or config key to fix. Kinds: a path that does not exist; an operating-system error on a path the
user gave (a name the filesystem refuses, an output folder that cannot be created, is a file, is
read-only, or a disk that fills while a checkpoint is written); a key given twice in a JSON or YAML
file; ground-truth fields of the wrong type; prompts that are the same once cleaned.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from safetensors import SafetensorError

from sam3tune.cli import main
from sam3tune.data.synth import SynthConfig, generate

LONG = "n" * 300  # longer than any file name the filesystem takes (255 bytes)
TINY_TRAIN = ["model.name=tiny", "loop.max_steps=1", "loop.num_workers=0", "val.every_epochs=0"]


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    """A workspace: a small dataset, a finished tiny run, and hostile copies of their files."""
    root = tmp_path_factory.mktemp("bad_input")
    generate(SynthConfig(image_size=(64, 64), splits=(("train", 4), ("valid", 1), ("test", 2))), root / "ds")
    (root / "afile").write_text("a file where a folder belongs")
    shutil.copytree(root / "ds", root / "ds_dup")
    ann = root / "ds_dup/train/_annotations.coco.json"
    ann.write_text(ann.read_text().replace("{", '{"categories": [], ', 1))
    gt = json.loads((root / "ds/test/_annotations.coco.json").read_text())
    (root / "gt.json").write_text(json.dumps(gt))
    (root / "gt_dup.json").write_text(json.dumps(gt).replace("{", '{"annotations": [], ', 1))
    for name, change in _GT_TYPE_ERRORS.items():
        bad = json.loads(json.dumps(gt))
        change(bad)
        (root / f"gt_{name}.json").write_text(json.dumps(bad))
    preds = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}
        for a in gt["annotations"]
    ]
    (root / "preds.json").write_text(json.dumps(preds))
    text = json.dumps(preds).replace('"score": 0.9', '"score": 0.9, "score": 0.1', 1)
    (root / "preds_dup.json").write_text(text)
    (root / "cfg_dup.yaml").write_text("loop:\n  max_steps: 1\nloop:\n  max_steps: 2\n")
    (root / "cfg_dup.json").write_text('{"overlays": true, "overlays": false}')
    (root / "cfg_nul.yaml").write_text('output_dir: "runs\\0x"\n')
    (root / "garbage.pt").write_bytes(b"not a checkpoint" * 10)
    cwd = os.getcwd()
    os.chdir(root)
    try:
        assert main(["train", "--data", "ds", *TINY_TRAIN, "output_dir=runs", "run_name=r1"]) == 0
    finally:
        os.chdir(cwd)
    shutil.copytree(root / "runs/r1", root / "run_dup")
    config = root / "run_dup/config.yaml"
    config.write_text(config.read_text() + "run_name: other\nrun_name: again\n")
    (root / "eval_dup.json").write_text('{"model": {}, "model": {}}')
    (root / "suite_dup.yaml").write_text("seeds: [1]\nseeds: [2]\ndatasets:\n  - root: ds\n")
    (root / "suite.yaml").write_text("datasets:\n  - name: shapes\n    root: ds\nseeds: [1]\n")
    (root / "suite_no_name.yaml").write_text("datasets:\n  - root: ds\nseeds: [1]\n")
    (root / "read_only").mkdir()
    (root / "read_only").chmod(0o555)
    return root


_GT_TYPE_ERRORS = {
    "category_string": lambda gt: gt["annotations"][0].update(
        category_id=str(gt["annotations"][0]["category_id"])
    ),
    "bbox_strings": lambda gt: gt["annotations"][0].update(bbox=["1", "2", "3", "4"]),
    "bbox_nan": lambda gt: gt["annotations"][0].update(bbox=[1, 2, float("nan"), 4]),
    "area_string": lambda gt: gt["annotations"][0].update(area="big"),
    "segmentation_number": lambda gt: gt["annotations"][0].update(segmentation=5),
    "image_id_string": lambda gt: gt["images"][0].update(id="0"),
    "category_name_number": lambda gt: gt["categories"][1].update(name=7),
    "annotations_dict": lambda gt: gt.update(annotations={}),
}

M = "runs/r1/model"
# (command, words, exit status, what the message must name)
CASES = {
    # a path that does not exist
    "train/no-data": ("train", ["--data", "/no/such", *TINY_TRAIN], 2, ["/no/such"]),
    "train/no-config": ("train", ["--config", "/no/such.yaml"], 2, ["/no/such.yaml"]),
    "train/no-run": ("train", ["--resume", "/no/such"], 2, ["/no/such"]),
    "doctor/no-data": ("doctor", ["--data", "/no/such", "--model", "tiny"], 1, ["/no/such"]),
    "eval/no-model": ("eval", ["--model", "/no/such", "--data", "ds", "--out", "e"], 2, ["/no/such"]),
    "eval/no-data": ("eval", ["--model", M, "--data", "/no/such", "--out", "e"], 2, ["/no/such"]),
    "eval/no-predictions": (
        "eval",
        ["--predictions", "/no/such.json", "--gt", "gt.json", "--out", "e"],
        2,
        ["/no/such.json"],
    ),
    "predict/no-model": (
        "predict",
        ["--model", "/no/such", "--prompt", "x", "ds/test", "--out", "p"],
        2,
        ["/no/such"],
    ),
    "predict/no-image": (
        "predict",
        ["--model", M, "--prompt", "x", "/no/such.jpg", "--out", "p"],
        2,
        ["/no/such.jpg"],
    ),
    "data inspect/no-data": ("data", ["inspect", "/no/such"], 1, ["/no/such"]),
    "data convert/no-data": ("data", ["convert", "/no/such", "--to", "coco", "--out", "c"], 2, ["/no/such"]),
    "data synth/no-config": ("data", ["synth", "s", "--config", "/no/such.yaml"], 2, ["/no/such.yaml"]),
    "import-checkpoint/no-file": ("import-checkpoint", ["/no/such.pt", "i"], 2, ["/no/such.pt"]),
    "import-checkpoint/not-a-checkpoint": ("import-checkpoint", ["garbage.pt", "i"], 2, ["garbage.pt"]),
    "export/no-model": ("export", ["--format", "onnx", "/no/such", "x"], 2, ["/no/such"]),
    "export/no-run": ("export", ["--format", "hub", "/no/such", "x"], 2, ["/no/such"]),
    # an output folder that cannot be created (a file is in the way), or that is a file
    "train/out-under-file": (
        "train",
        ["--data", "ds", *TINY_TRAIN, "output_dir=afile/x"],
        2,
        ["afile", "output_dir"],
    ),
    "train/out-is-file": (
        "train",
        ["--data", "ds", *TINY_TRAIN, "output_dir=afile"],
        2,
        ["afile", "output_dir"],
    ),
    "eval/out-under-file": (
        "eval",
        ["--predictions", "preds.json", "--gt", "gt.json", "--out", "afile/x"],
        2,
        ["afile", "--out"],
    ),
    "eval/out-is-file": (
        "eval",
        ["--predictions", "preds.json", "--gt", "gt.json", "--out", "afile"],
        2,
        ["afile", "--out"],
    ),
    "predict/out-under-file": (
        "predict",
        ["--model", M, "--prompt", "x", "ds/test", "--out", "afile/x"],
        2,
        ["afile", "--out"],
    ),
    "data convert/out-under-file": (
        "data",
        ["convert", "ds", "--to", "coco", "--out", "afile/x"],
        2,
        ["afile", "--out"],
    ),
    "data synth/out-under-file": ("data", ["synth", "afile/x", "--images", "1"], 2, ["afile", "OUT"]),
    "demo/out-under-file": ("demo", ["--out", "afile/x", "steps=1"], 2, ["afile", "out"]),
    "demo/out-is-file": ("demo", ["--out", "afile", "steps=1"], 2, ["afile", "out"]),
    "import-checkpoint/out-under-file": ("import-checkpoint", ["garbage.pt", "afile/x"], 2, ["afile", "OUT"]),
    "export/out-under-file": ("export", ["--format", "hub", "runs/r1", "afile/x"], 2, ["afile", "OUT"]),
    # a name the filesystem refuses
    "train/name-too-long": (
        "train",
        ["--data", "ds", *TINY_TRAIN, f"run_name={LONG}"],
        2,
        ["run_name", "too long"],
    ),
    "train/name-with-nul": (
        "train",
        ["--config", "cfg_nul.yaml", "--data", "ds", *TINY_TRAIN],
        2,
        ["output_dir", "NUL"],
    ),
    "eval/name-too-long": (
        "eval",
        ["--predictions", "preds.json", "--gt", "gt.json", "--out", LONG],
        2,
        ["--out", "too long"],
    ),
    "predict/name-too-long": (
        "predict",
        ["--model", M, "--prompt", "x", "ds/test", "--out", LONG],
        2,
        ["--out", "too long"],
    ),
    "predict/image-name-too-long": (
        "predict",
        ["--model", M, "--prompt", "x", LONG, "--out", "p"],
        2,
        ["IMAGE_OR_DIR", "too long"],
    ),
    "train/run-name-too-long": ("train", ["--resume", LONG], 2, ["not a sam3tune run directory"]),
    "data synth/name-too-long": ("data", ["synth", LONG, "--images", "1"], 2, ["OUT", "too long"]),
    "data inspect/name-too-long": ("data", ["inspect", LONG], 1, ["too long"]),
    "train/data-name-too-long": ("train", ["--data", LONG, *TINY_TRAIN], 2, ["data.root", "too long"]),
    # a key given twice (JSON: annotations, ground truth, predictions, reports; YAML and JSON configs)
    "train/annotations-repeat-a-key": (
        "train",
        ["--data", "ds_dup", *TINY_TRAIN, "output_dir=o"],
        2,
        ["ds_dup/train/_annotations.coco.json", "'categories'"],
    ),
    "train/config-repeats-a-key": (
        "train",
        ["--config", "cfg_dup.yaml", "--data", "ds", *TINY_TRAIN],
        2,
        ["cfg_dup.yaml", "'loop'"],
    ),
    "train/run-config-repeats-a-key": (
        "train",
        ["--resume", "run_dup"],
        2,
        ["run_dup/config.yaml", "'run_name'"],
    ),
    "doctor/annotations-repeat-a-key": (
        "doctor",
        ["--data", "ds_dup", "--model", "tiny"],
        1,
        ["ds_dup/train/_annotations.coco.json", "'categories'"],
    ),
    "doctor/config-repeats-a-key": (
        "doctor",
        ["--config", "cfg_dup.yaml", "--data", "ds"],
        2,
        ["cfg_dup.yaml", "'loop'"],
    ),
    "eval/predictions-repeat-a-key": (
        "eval",
        ["--predictions", "preds_dup.json", "--gt", "gt.json", "--out", "e"],
        2,
        ["preds_dup.json", "'score'"],
    ),
    "eval/ground-truth-repeats-a-key": (
        "eval",
        ["--predictions", "preds.json", "--gt", "gt_dup.json", "--out", "e"],
        2,
        ["gt_dup.json", "'annotations'"],
    ),
    "eval/annotations-repeat-a-key": (
        "eval",
        ["--model", "tiny", "--data", "ds_dup", "data.val=train", "--out", "e"],
        2,
        ["ds_dup/train/_annotations.coco.json", "'categories'"],
    ),
    "predict/config-repeats-a-key": (
        "predict",
        ["--config", "cfg_dup.json", "--model", M, "--prompt", "x", "ds/test", "--out", "p"],
        2,
        ["cfg_dup.json", "'overlays'"],
    ),
    "data inspect/annotations-repeat-a-key": (
        "data",
        ["inspect", "ds_dup"],
        1,
        ["ds_dup/train/_annotations.coco.json", "'categories'"],
    ),
    "data convert/annotations-repeat-a-key": (
        "data",
        ["convert", "ds_dup", "--to", "coco", "--out", "c"],
        2,
        ["ds_dup/train/_annotations.coco.json", "'categories'"],
    ),
    "export/run-config-repeats-a-key": (
        "export",
        ["--format", "hub", "run_dup", "x"],
        2,
        ["run_dup/config.yaml", "'run_name'"],
    ),
    "export/report-repeats-a-key": (
        "export",
        ["--format", "hub", "runs/r1", "x", "--eval", "eval_dup.json"],
        2,
        ["eval_dup.json", "'model'"],
    ),
    "suite/no-config": ("suite", ["--config", "/no/such.yaml"], 2, ["/no/such.yaml"]),
    "suite/config-repeats-a-key": ("suite", ["--config", "suite_dup.yaml"], 2, ["suite_dup.yaml", "'seeds'"]),
    "suite/dataset-without-a-name": ("suite", ["--config", "suite_no_name.yaml"], 2, ["datasets[0].name"]),
    "suite/out-under-file": ("suite", ["--config", "suite.yaml", "--out", "afile/x"], 2, ["afile"]),
    # prompts that are one prompt once cleaned
    "predict/prompts-same-once-cleaned": (
        "predict",
        ["--model", M, "--prompt", "Car", "--prompt", "car.", "ds/test", "--out", "p"],
        2,
        ["'Car'", "'car.'", "prompts"],
    ),
}
CASES.update(
    {
        f"eval/ground-truth-{name.replace('_', '-')}": (
            "eval",
            ["--predictions", "preds.json", "--gt", f"gt_{name}.json", "--out", "e"],
            2,
            [f"gt_{name}.json", field],
        )
        for name, field in {
            "category_string": "category_id",
            "bbox_strings": "bbox",
            "bbox_nan": "bbox",
            "area_string": "area",
            "segmentation_number": "segmentation",
            "image_id_string": "image",
            "category_name_number": "name",
            "annotations_dict": "annotations",
        }.items()
    }
)


_OUTPUTS = {"e", "p", "c", "i", "x", "s", "o"}  # output names of the cases: made unique per case


def _run(ws: Path, command: str, words: list[str], capsys, case: str = "") -> tuple[int, str]:
    """Run ``sam3tune COMMAND WORDS`` in ``ws``; the exit status and stderr (with status 1, + stdout: the
    report of ``data inspect`` and ``doctor``)."""
    words = [f"{w}-{case.replace('/', '-').replace(' ', '-')}" if w in _OUTPUTS else w for w in words]
    capsys.readouterr()
    cwd = os.getcwd()
    os.chdir(ws)
    try:
        status = main([command, *words])
    finally:
        os.chdir(cwd)
    captured = capsys.readouterr()
    return status, captured.err if status != 1 else captured.err + captured.out


def _check(status: int, err: str, command: str, words: list[str], expected: int, names: list[str]) -> None:
    assert "Traceback" not in err, err
    name = command if command != "data" else f"data {words[0]}"
    assert status == expected, err
    if expected == 2:
        lines = [line for line in err.strip().splitlines() if line.startswith("sam3tune ")]
        assert lines and lines[-1].startswith(f"sam3tune {name}: "), err
        err = lines[-1]
    # else (1): `data inspect` and `doctor` print a report that says what is unusable, and why
    missing = [n for n in names if n not in err]
    assert not missing, f"{missing} not named in: {err}"


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_refused_by_name(ws, case, capsys):
    command, words, expected, names = CASES[case]
    status, err = _run(ws, command, words, capsys, case)
    _check(status, err, command, words, expected, names)


def test_a_full_disk_while_a_checkpoint_is_written(ws, capsys, monkeypatch):
    """safetensors reports a full disk as a SafetensorError (not an OSError), torch.save as a RuntimeError:
    the write is refused naming the checkpoint folder and the key, and no half checkpoint is left."""
    import sam3tune.train.checkpoint as checkpoint

    def full_disk(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(checkpoint, "save_file", full_disk)
    status, err = _run(ws, "train", ["--data", "ds", *TINY_TRAIN, "output_dir=full", "run_name=r"], capsys)
    assert status == 2 and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("sam3tune train: cannot write full/r/checkpoints/last (output_dir)"), last
    assert "No space left on device" in last
    assert not list((ws / "full/r/checkpoints").glob("*.tmp"))


@pytest.mark.parametrize(
    "command, words, key",
    [
        ("train", ["--data", "ds", *TINY_TRAIN, "output_dir=read_only/runs"], "output_dir"),
        ("eval", ["--predictions", "preds.json", "--gt", "gt.json", "--out", "read_only/e"], "--out"),
        ("predict", ["--model", M, "--prompt", "x", "ds/test", "--out", "read_only/p"], "--out"),
        ("data", ["synth", "read_only/s", "--images", "1"], "OUT"),
        ("demo", ["--out", "read_only/d", "steps=1"], "out"),
    ],
)
def test_a_read_only_output_folder(ws, capsys, monkeypatch, command, words, key):
    """A folder nothing may be created in (mode 0555; root ignores that mode, so the refusal the kernel
    gives everyone else is given here too, at ``os.mkdir``)."""
    folder, real_mkdir = (ws / "read_only").resolve(), os.mkdir

    def mkdir(path, *args, **kwargs):
        if Path(os.path.abspath(path)).is_relative_to(folder):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", mkdir)
    status, err = _run(ws, command, words, capsys)
    _check(status, err, command, words, 2, ["read_only", key, "Permission denied"])


def test_debug_shows_the_traceback(ws, capsys, monkeypatch):
    status, err = _run(ws, "--debug", ["eval", "--model", "/no/such", "--data", "ds"], capsys)
    assert status == 2 and "Traceback" in err and err.strip().splitlines()[-1].startswith("sam3tune eval: ")
    monkeypatch.setenv("SAM3TUNE_DEBUG", "1")
    status, err = _run(ws, "eval", ["--model", "/no/such", "--data", "ds"], capsys)
    assert status == 2 and "Traceback" in err
