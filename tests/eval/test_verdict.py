"""The zero-shot verdict from a run's validation records and from an evaluation against the start model."""

from pathlib import Path

import pytest

from sam3tune.eval.verdict import Verdict, verdict_from_metrics, verdict_from_records


def _val(step, **metrics):
    return {"kind": "val", "step": step, "epoch": 0, **metrics}


def test_best_trained_value_against_step_zero():
    records = [
        _val(0, bbox_AP=0.10, loss=9.0),
        {"kind": "train", "step": 1, "loss": 8.0, "bbox_AP": 0.99},  # train records never count
        _val(4, bbox_AP=0.30, loss=5.0),
        _val(8, bbox_AP=0.25, loss=4.0),
    ]
    verdict = verdict_from_records(records, "bbox_AP", "max", Path("run/checkpoints/best"))
    assert (verdict.zero_shot, verdict.tuned, verdict.step) == (0.10, 0.30, 4)
    assert verdict.better and verdict.change == pytest.approx(0.20)
    line = verdict.line()
    assert line.startswith("zero-shot verdict: better: best validation bbox_AP 0.3000 (step 4)")
    assert "vs zero-shot 0.1000 (+0.2000, x3)" in line and line.endswith("best weights: run/checkpoints/best")

    by_loss = verdict_from_records(records, "loss", "min")
    assert (by_loss.tuned, by_loss.step, by_loss.better) == (4.0, 8, True)
    assert by_loss.change == pytest.approx(-5.0)


def test_not_better_says_so_and_ties_are_not_better():
    records = [_val(0, bbox_AP=0.5), _val(3, bbox_AP=0.4), _val(6, bbox_AP=0.5), _val(9, bbox_AP=0.5)]
    verdict = verdict_from_records(records, "bbox_AP")
    assert verdict.step == 6 and not verdict.better  # the first of the tied best values; a tie is no gain
    assert "NOT better" in verdict.line() and "the starting model scores at least as well" in verdict.line()


def test_no_verdict_without_step_zero_or_trained_validation_or_finite_values():
    assert verdict_from_records([_val(4, bbox_AP=0.3)], "bbox_AP") is None  # no zero-shot record
    assert verdict_from_records([_val(0, bbox_AP=0.3)], "bbox_AP") is None  # nothing trained yet
    assert verdict_from_records([_val(0, bbox_AP=0.3), _val(2, bbox_AP=None)], "bbox_AP") is None
    assert verdict_from_records([_val(0, loss=1.0), _val(2, loss=0.5)], "bbox_AP") is None


class _Metrics:
    def __init__(self, **summary):
        self._summary = summary

    def summary(self):
        return self._summary


def test_verdict_from_two_evaluations():
    verdict = verdict_from_metrics(_Metrics(bbox_AP=0.7), _Metrics(bbox_AP=0.0), "bbox_AP")
    assert verdict == Verdict("bbox_AP", "max", 0.0, 0.7)
    assert "(+0.7000)" in verdict.line()  # no ratio against zero
    assert verdict_from_metrics(_Metrics(bbox_AP=None), _Metrics(bbox_AP=0.1)) is None


def test_two_sided_verdict_with_retention():
    records = [
        _val(0, bbox_AP=0.10, retention_bbox_AP=1.0, retention_true_bbox_AP50=0.50),
        _val(4, bbox_AP=0.30, retention_bbox_AP=0.62, retention_true_bbox_AP50=0.40),
        _val(8, bbox_AP=0.20, retention_bbox_AP=0.90, retention_true_bbox_AP50=0.45),
    ]
    verdict = verdict_from_records(records, "bbox_AP", "max", Path("run/checkpoints/best"))
    assert verdict.step == 4  # the retention side is read at the best step, not at its own best
    assert verdict.retained.kept == pytest.approx(0.62) and verdict.retained.true_kept == pytest.approx(0.8)
    line = verdict.line()
    assert (
        "(+0.2000, x3); untuned prompts: keeps 62% of the starting model's answers (retention box AP "
        "0.6200 vs 1.0000); labelled box AP50 0.4000 vs zero-shot 0.5000 (80% kept); best weights: "
        "run/checkpoints/best" in line
    )
    tuned = _Metrics(bbox_AP=0.7, retention_bbox_AP=0.5, retention_true_bbox_AP50=None)
    from_eval = verdict_from_metrics(tuned, _Metrics(bbox_AP=0.1, retention_bbox_AP=1.0), "bbox_AP")
    assert from_eval.retained.kept == 0.5 and from_eval.retained.true_kept is None
    assert from_eval.line().endswith(
        "untuned prompts: keeps 50% of the starting model's answers (retention box AP 0.5000 vs 1.0000)"
    )
    assert verdict_from_metrics(_Metrics(bbox_AP=0.7), _Metrics(bbox_AP=0.1)).retained is None
