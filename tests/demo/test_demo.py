"""`sam3tune demo` end to end: a tiny run through the CLI (default suite) and the full demo (slow), which
must show held-out learning."""

from __future__ import annotations

import json
import re

import pytest
from PIL import Image

from sam3tune.cli import main
from sam3tune.demo.runner import DemoSettings, run_demo
from sam3tune.model import load_model

TABLE_ROW = re.compile(r"^(box AP50|mask AP50|box cgF1|false-fire rate)\s+(-|[\d.]+)\s+(-|[\d.]+)\s+", re.M)


def test_tiny_demo_writes_table_report_curve_overlays(tmp_path, capsys):
    out = tmp_path / "demo"
    argv = ["demo", "steps=3", "--out", str(out), "train_images=16", "heldout_images=6"]
    assert main([*argv, "--threads", "1", "overlays=2"]) == 0  # key=value on both sides of options
    printed = capsys.readouterr().out
    assert "zero-shot" in printed and "tuned" in printed
    rows = {name: (before, after) for name, before, after in TABLE_ROW.findall(printed)}
    assert set(rows) == {"box AP50", "mask AP50", "box cgF1", "false-fire rate"}
    report = json.loads((out / "eval" / "eval.json").read_text())
    before, after = report["baseline"]["summary"], report["model"]["summary"]
    for name, key in (
        ("box AP50", "bbox_AP50"),
        ("mask AP50", "segm_AP50"),
        ("false-fire rate", "false_fire_rate"),
    ):
        assert rows[name] == (
            f"{100 * before[key]:.1f}",
            f"{100 * after[key]:.1f}",
        )  # the table is the report
    assert report["model"]["metrics"]["images"] == 6 and report["model"]["metrics"]["categories"] == 3
    # the base's own concepts on the same images: retention against the base's answers, and their labels
    retention = report["model"]["metrics"]["retention"]
    assert retention["prompts"] == ["circle", "square", "triangle", "diamond", "hexagon"]
    assert retention["true"] is not None and report["baseline"]["summary"]["retention_bbox_AP"] == 1.0
    for label, key in (("retention box AP", "retention_bbox_AP"), ("box AP50", "retention_true_bbox_AP50")):
        row = re.search(rf"^base concepts: {label}\s+(\S+)\s+(\S+)", printed, re.M)
        assert row.groups() == tuple(
            f"{100 * r['summary'][key]:.1f}" for r in (report["baseline"], report["model"])
        )
    assert f"held-out {report['verdict']['line']}" in printed  # the base is the run's starting model
    for path in (
        out / "eval" / "eval.md",
        out / "run" / "loss_curve.png",
        out / "overlays" / "side_by_side.png",
    ):
        assert str(path) in printed and path.stat().st_size > 0
    metrics = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if m["kind"] == "train"] == [1, 2, 3]
    for name in ("zero-shot", "tuned"):
        overlays = sorted((out / "overlays" / name / "overlays").glob("*.png"))
        assert [Image.open(p).size for p in overlays] == [(256, 256)] * 2  # 64 px images drawn 4x
    assert Image.open(out / "overlays" / "side_by_side.png").size == (2 * 256, 2 * 256)
    base_concepts = out / "overlays" / "base-concepts" / "side_by_side.png"
    assert str(base_concepts) in printed and Image.open(base_concepts).size[1] == 2 * 256
    tuned = load_model(out / "run" / "model")
    assert tuned.report.weights_loaded and tuned.image_size == 64
    # never overwrites a demo (its folder holds its training run)
    assert main(argv) == 2 and f"{out} holds training runs (run)" in capsys.readouterr().err


@pytest.mark.slow
def test_full_demo_learns_the_new_shapes_on_held_out_images(tmp_path):
    result = run_demo(DemoSettings(out=tmp_path / "demo"), progress=False)
    before, after = result.zero_shot.summary(), result.tuned.summary()
    print(result.table, result.seconds)
    # measured: 0.03 -> 0.71 on one thread, 0.03 -> 0.70 on two (docs/demo.md); the issue asks for 0.3
    assert before["bbox_AP50"] <= 0.1
    assert after["bbox_AP50"] >= 0.5
    assert after["false_fire_rate"] <= 0.2


@pytest.mark.parametrize(
    ("override", "owner"),
    [
        ("finetune.loop.max_steps=5", "steps"),
        ("finetune.loop={epochs: 2}", "steps"),
        ("finetune.model.name=x", "base"),
    ],
)
def test_finetune_keys_the_demo_sets_itself_are_refused(tmp_path, capsys, override, owner):
    """The demo sets the step count, data, output and base model of its run: a ``finetune.*`` value for
    one of those would be silently replaced, so it is refused naming the key and the setting to use."""
    assert main(["demo", "--out", str(tmp_path / "demo"), override]) == 2
    err = capsys.readouterr().err
    key = override.split("=")[0] if "{" not in override else "finetune.loop.epochs"
    assert f"{key}: the demo sets it from {owner}" in err
    assert not (tmp_path / "demo").exists()
