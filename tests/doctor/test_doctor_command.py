"""``sam3tune doctor`` end to end: printed report and exit status."""

from sam3tune.cli import main


def test_doctor_prints_the_report_and_exits_0_when_healthy(shapes, capsys):
    status = main(
        ["doctor", "--data", str(shapes), "--model", "tiny", "loop.device=cpu", "loop.batch_size=2"]
    )
    out = capsys.readouterr().out
    assert status == 0
    for section in (
        "DATA",
        "LOSS TERMS",
        "EXPECTED TOTAL",
        "TRAINABLE PARAMETERS",
        "OPTIMISER",
        "GPU MEMORY",
    ):
        assert f"\n{section}" in out
    assert "loss_giou_aux_0_o2m" not in out  # keys are shown as group / layer / term columns
    assert "one-to-many       aux 0  loss_giou" in out
    assert "0 error(s), 0 warning(s), 0 note(s): ready to train" in out


def test_doctor_exits_1_on_an_error_flag(shapes, tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("loss:\n  weights:\n    loss_mask: 20000\nloop:\n  device: cpu\n")
    status = main(["doctor", "--data", str(shapes), "--model", "tiny", "--config", str(config)])
    out = capsys.readouterr().out
    assert status == 1
    assert "ERROR   total_out_of_range" in out and "fix:" in out
    assert "loss.weights.loss_mask: 20000.0 (recipe: 200.0)" in out


def test_doctor_exits_2_on_a_bad_config(shapes, capsys):
    assert main(["doctor", "--data", str(shapes), "loss.weights.loss_mask=heavy"]) == 2
    assert "loss.weights.loss_mask" in capsys.readouterr().err


def test_docs_list_every_flag():
    from pathlib import Path

    from sam3tune.doctor import CATALOGUE

    docs = (Path(__file__).resolve().parents[2] / "docs" / "doctor.md").read_text()
    assert [code for code in CATALOGUE if f"| `{code}` |" not in docs] == []
