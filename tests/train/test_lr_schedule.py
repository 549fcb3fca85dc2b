import importlib.machinery
import importlib.util
import math

import pytest

from sam3tune.train.schedule import InverseSqrtSchedule
from tests.meta_reference import reference_unavailable

RECIPE = {"warmup_steps": 20, "cooldown_steps": 20, "timescale": 20}


def test_recipe_factor_at_hand_computed_steps():
    schedule = InverseSqrtSchedule(**RECIPE, total_steps=100)
    assert schedule.factor(0) == 0.0  # warm-up starts at zero
    assert schedule.factor(5) == pytest.approx(0.25)
    assert schedule.factor(20) == pytest.approx(1.0)  # end of warm-up, no decay yet
    assert schedule.factor(21) == pytest.approx(1 / math.sqrt(21 / 20))
    assert schedule.factor(60) == pytest.approx(1 / math.sqrt(60 / 20))
    assert schedule.factor(80) == pytest.approx(1 / math.sqrt(80 / 20))  # cool-down factor still 1
    assert schedule.factor(90) == pytest.approx(0.5 / math.sqrt(90 / 20))
    assert schedule.factor(99) == pytest.approx(0.05 / math.sqrt(99 / 20))


def test_timescale_and_zero_warmup():
    schedule = InverseSqrtSchedule(warmup_steps=0, cooldown_steps=0, timescale=10, total_steps=50)
    assert schedule.factor(0) == 1.0
    assert schedule.factor(30) == pytest.approx(1 / math.sqrt(40 / 10))


def test_short_run_overlapping_warmup_and_cooldown():
    schedule = InverseSqrtSchedule(**RECIPE, total_steps=30)
    # step 15: warm-up 15/20, cool-down (30-15)/20
    assert schedule.factor(15) == pytest.approx(0.75 * 0.75)


@pytest.mark.parametrize(
    ("warmup", "cooldown", "timescale", "total"), [(20, 20, 20, 100), (5, 10, 7, 64), (20, 20, 20, 33)]
)
def test_equals_meta_scheduler(warmup, cooldown, timescale, total):
    schedulers = _meta_schedulers()
    meta = schedulers.InverseSquareRootParamScheduler(
        base_lr=1.0, warmup_steps=warmup, cooldown_steps=cooldown, timescale=timescale
    )
    ours = InverseSqrtSchedule(warmup, cooldown, timescale, total)
    for step in range(1, total):  # Meta's trainer calls it with where = step / total (< 1)
        assert ours.factor(step) == pytest.approx(meta(step=step, where=step / total), rel=1e-12)
    assert ours.factor(0) == meta(step=0, where=0.0) == 0.0


def _meta_schedulers():
    """Meta's ``sam3/train/optim/schedulers.py`` (imports only ``math``), loaded from the installed
    package without executing ``sam3/__init__`` (which needs einops, triton, ...)."""
    found = importlib.machinery.PathFinder.find_spec("sam3")  # the files, even if a stub is imported
    if found is None or not found.submodule_search_locations:
        reference_unavailable("Meta's sam3 is not installed")
    path = f"{found.submodule_search_locations[0]}/train/optim/schedulers.py"
    spec = importlib.util.spec_from_file_location("meta_sam3_schedulers", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rejects_bad_settings():
    with pytest.raises(ValueError, match="timescale"):
        InverseSqrtSchedule(warmup_steps=1, cooldown_steps=1, timescale=0, total_steps=5)
    with pytest.raises(ValueError, match="total_steps"):
        InverseSqrtSchedule(warmup_steps=1, cooldown_steps=1, timescale=1, total_steps=0)
