"""A suite's table: mean and spread over seeds, the suite row, reference figures; numbers by hand."""

from __future__ import annotations

import math

import pytest

from sam3tune.config import ConfigError
from sam3tune.suite.aggregate import DatasetResult, markdown_table, spread, summarise
from sam3tune.suite.reference import load_reference


def test_spread_is_the_sample_standard_deviation():
    assert spread([0.3, 0.5, 0.4]) == pytest.approx({"mean": 0.4, "std": 0.1, "min": 0.3, "max": 0.5, "n": 3})
    assert spread([0.7])["std"] is None and spread([])["mean"] is None


def results() -> list[DatasetResult]:
    return [
        DatasetResult("x", 0.10, {1: 0.30, 2: 0.50, 3: 0.40}),
        DatasetResult("y", 0.20, {1: 0.60, 2: 0.70}, failed={"3": "training diverged"}),
    ]


def test_per_dataset_and_suite_figures():
    summary = summarise(results(), [1, 2, 3], "bbox_AP", 10, None)
    x, y = summary["datasets"]
    assert x["tuned"]["mean"] == pytest.approx(0.40) and x["tuned"]["std"] == pytest.approx(0.10)
    assert x["change"] == pytest.approx(0.30) and x["missing_seeds"] == []
    assert y["tuned"]["mean"] == pytest.approx(0.65) and y["tuned"]["std"] == pytest.approx(math.sqrt(0.005))
    assert y["missing_seeds"] == [3] and y["failed"] == {"3": "training diverged"}
    suite = summary["suite"]
    assert suite["zero_shot"] == pytest.approx(0.15)
    assert suite["tuned"]["mean"] == pytest.approx(0.525)  # mean of the dataset means
    # seeds 1 and 2 finished everywhere: suite means 0.45 and 0.60, their sample std
    assert suite["tuned"]["std"] == pytest.approx(math.sqrt(2 * 0.075**2))
    assert suite["tuned"]["seeds_on_every_dataset"] == 2
    assert suite["complete"] is False and suite["change"] == pytest.approx(0.375)


def test_markdown_shows_percentages_and_the_reference():
    reference = load_reference("odinw13")
    table = markdown_table(summarise(results(), [1, 2, 3], "bbox_AP", 10, reference))
    assert "| x | 10.0 | 40.0 ± 10.0 | +30.0 | 3/3 |" in table
    assert "| y | 20.0 | 65.0 ± 7.1 | +45.0 | 2/3 (failed: 3) | - | - |" in table
    assert (
        "| **suite mean (2 datasets)** | **15.0** | **52.5 ± 10.6** | **+37.5** | incomplete | 61.0 | 71.8 |"
        in table
    )
    assert "arXiv:2511.16719v1, Table 2" in table
    assert "published average is over 13 datasets" in table  # this suite has 2


def test_reference_sources_and_mismatches():
    conference = load_reference("rf100vl@conference")
    assert (conference.zero_shot, conference.tuned) == pytest.approx((0.143, 0.357))
    arxiv = load_reference("rf100vl")
    assert (arxiv.source, arxiv.zero_shot, arxiv.tuned) == (
        "arxiv-v1",
        pytest.approx(0.152),
        pytest.approx(0.365),
    )
    notes = arxiv.mismatches("bbox_AP50", 5, ["a"])
    assert any("bbox_AP, this table shows bbox_AP50" in n for n in notes)
    assert any("10-shot, this suite is 5-shot" in n for n in notes)


def test_bad_references_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="not a shipped reference"):
        load_reference("odinw99")
    (tmp_path / "r.yaml").write_text("name: X\nmetric: bbox_AP\nshots: 10\ncompare: paper\nsources: {}\n")
    with pytest.raises(ConfigError, match="expected name, metric"):
        load_reference(str(tmp_path / "r.yaml"))
    with pytest.raises(ConfigError, match="source 'nope'"):
        load_reference("odinw13@nope")
