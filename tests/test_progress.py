"""Issue 14, class 8: progress bars draw only on a terminal; a log gets lines, not carriage returns."""

import io
import re
from itertools import pairwise
from pathlib import Path

import pytest

import sam3tune
from sam3tune import progress
from sam3tune.progress import progress_bar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def no_forced_mode(monkeypatch):
    monkeypatch.delenv("SAM3TUNE_PROGRESS", raising=False)


def test_a_log_gets_one_line_at_the_end_not_a_thousand_redraws():
    log = io.StringIO()
    bar = progress_bar(total=1000, desc="epoch 1/3", file=log)
    for _ in range(1000):
        bar.update(1)
    bar.set_postfix({"loss": "1.5"}, refresh=False)
    bar.close()
    text = log.getvalue()
    assert "\r" not in text
    (line,) = text.splitlines()
    assert line.startswith("epoch 1/3: 1000/1000 [") and "loss=1.5" in line


def test_a_long_loop_logs_one_line_per_interval(monkeypatch):
    clock = iter(range(0, 10_000, 5))  # the clock moves 5 s each time tqdm reads it
    monkeypatch.setattr(progress, "LINE_INTERVAL_S", 30.0)
    log = io.StringIO()
    bar = progress_bar(range(40), desc="predict", file=log)
    bar._time = lambda: float(next(clock))  # tqdm reads its clock through this attribute
    bar.start_t = bar.last_print_t = bar._time()
    for _ in bar:
        pass
    lines = log.getvalue().splitlines()
    elapsed = [int(m[1]) * 60 + int(m[2]) for m in (re.search(r"\[(\d+):(\d+)<", line) for line in lines)]
    assert lines[-1].startswith("predict: 40/40")
    assert len(lines) >= 3
    assert all(b - a >= 30 for a, b in pairwise(elapsed[:-1]))  # one line per interval


def test_a_terminal_gets_a_bar_redrawn_in_place():
    screen = Terminal()
    bar = progress_bar(total=50, desc="epoch", file=screen, mininterval=0)
    for _ in range(50):
        bar.update(1)
    bar.close()
    assert screen.getvalue().count("\r") > 10


def test_the_mode_can_be_forced(monkeypatch):
    monkeypatch.setenv("SAM3TUNE_PROGRESS", "lines")
    screen = Terminal()
    with progress_bar(total=5, desc="x", file=screen) as bar:
        bar.update(5)
    assert "\r" not in screen.getvalue()


def test_every_progress_bar_of_the_package_goes_through_progress_bar():
    package = Path(sam3tune.__file__).parent
    direct = [
        f"{path.relative_to(package)}:{number}"
        for path in package.rglob("*.py")
        if path.name != "progress.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"(?<![\w.])tqdm\(", line)
    ]
    assert direct == []
