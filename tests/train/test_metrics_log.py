import json

from PIL import Image

from sam3tune.run_dir import RunDir
from sam3tune.train.loss_curve import plot_loss_curve, running_mean
from sam3tune.train.metrics_log import MetricsLog, read_metrics


def test_records_are_json_lines_and_nan_becomes_null(tmp_path):
    log = MetricsLog(RunDir(tmp_path))
    log.write({"kind": "train", "step": 1, "epoch": 1, "loss": 2.5, "skipped": False})
    log.write({"kind": "train", "step": 2, "epoch": 1, "loss": float("nan"), "skipped": True})
    log.close()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[1]) == {"kind": "train", "step": 2, "epoch": 1, "loss": None, "skipped": True}
    assert list((tmp_path / "tb").iterdir())  # TensorBoard event file written


def test_resume_trims_records_past_the_checkpoint_and_ignores_torn_or_foreign_lines(tmp_path):
    log = MetricsLog(RunDir(tmp_path))
    for step in range(1, 6):
        log.write({"kind": "train", "step": step, "epoch": 1, "loss": float(step)})
    log.write({"kind": "val", "step": 5, "epoch": 1, "loss": 9.0})
    log.close()
    with open(tmp_path / "metrics.jsonl", "a") as handle:
        handle.write('3\n["not", "a record"]\n{"kind": "train"}\n\xff\xfe\n')  # hand-edited or damaged lines
        handle.write('{"kind": "train", "st')  # killed mid-write
    resumed = MetricsLog(RunDir(tmp_path), resume_step=3)
    resumed.write({"kind": "train", "step": 4, "epoch": 1, "loss": 40.0})
    resumed.close()
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [(r["step"], r["loss"]) for r in records] == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0)]


def test_loss_curve_png_has_a_panel_per_component(tmp_path):
    records = [
        {"kind": "train", "step": s, "epoch": 1, "loss": 10.0 / s, "loss_ce": 1.0 / s, "loss_bbox": 0.5}
        for s in range(1, 11)
    ]
    records.append({"kind": "val", "step": 10, "epoch": 1, "loss": 1.5})
    path = plot_loss_curve(records, tmp_path / "loss_curve.png")
    with Image.open(path) as image:
        width, height = image.size
        assert image.format == "PNG"
    assert (width, height) == (1260, 320)  # three panels of 4.2 x 3.2 inches at 100 dpi


def test_running_mean_is_a_trailing_window_mean():
    assert running_mean([2.0, 4.0, 6.0, 8.0], window=2) == [2.0, 3.0, 5.0, 7.0]
    assert running_mean([1.0] * 40) == [1.0] * 40  # default window 40 // 20 = 2
