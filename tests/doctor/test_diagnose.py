import math

import pytest

from sam3tune.doctor.diagnosis import diagnose
from sam3tune.doctor.loss_table import GROUPS
from tests.doctor.conftest import run_config


def test_healthy_configuration_raises_no_flag(shapes):
    report = diagnose(run_config(shapes, "loop.batch_size=2"))
    assert report.flags == [], [f"{f.code}: {f.message}" for f in report.flags]
    assert report.ok and report.exit_status == 0
    # Data: 6 images, every query positive or negative, masks on every object.
    assert report.data.images == 6 and report.data.targets > 0
    assert report.data.mask_coverage == 1.0 and report.data.tiny_objects == 0
    # The step: every term present, contributions add up to the total, shares to 1.
    losses = report.losses
    assert {t.group for t in losses.terms} == set(GROUPS)
    assert math.isclose(sum(t.contribution for t in losses.terms), losses.total, rel_tol=1e-5)
    assert math.isclose(sum(losses.group_totals().values()), losses.total, rel_tol=1e-5)
    assert math.isclose(sum(t.share for t in losses.terms), 1.0, rel_tol=1e-5)
    assert report.expected.low <= losses.total <= report.expected.high
    assert report.batch.images == 2 and report.batch.objects > 0
    # Parameters, optimiser and memory are all there.
    assert report.parameters[-1].component == "all" and report.parameters[-1].trainable > 0
    assert {g.name.split(".")[0] for g in report.learning_rates} == {"vision", "text", "transformer"}
    assert all(g.lr == pytest.approx(g.recipe_lr) for g in report.learning_rates)
    memory = report.memory
    assert memory.optimizer_state == 2 * memory.gradients  # AdamW: two float32 moments per gradient
    assert memory.activations > memory.weights > 0
    assert memory.total >= memory.weights + memory.activations


def test_exemplar_training_keeps_the_tables_and_flags(shapes):
    report = diagnose(run_config(shapes, "loop.batch_size=2", "data.exemplars.probability=1.0"))
    assert report.flags == [], [f"{f.code}: {f.message}" for f in report.flags]
    losses = report.losses
    assert {t.group for t in losses.terms} == set(GROUPS)
    assert math.isclose(sum(t.contribution for t in losses.terms), losses.total, rel_tol=1e-5)
    assert report.expected.low <= losses.total <= report.expected.high
    geometry = next(row for row in report.parameters if row.component == "geometry")
    assert geometry.trainable == geometry.total > 0
