import json
import math
import re

import pytest

from sam3tune.doctor.diagnosis import diagnose
from sam3tune.doctor.loss_table import GROUPS
from tests.doctor.conftest import rewrite_annotations, run_config


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


def _many_categories(shapes, target, extra=300):
    """``shapes`` with ``extra`` unused categories kept: each a negative query on every image."""
    root = rewrite_annotations(shapes, target, lambda annotation, width, height: None)
    path = root / "train" / "_annotations.coco.json"
    coco = json.loads(path.read_text())
    first = 1 + max(c["id"] for c in coco["categories"])
    coco["categories"] += [{"id": first + i, "name": f"thing {i}"} for i in range(extra)]
    path.write_text(json.dumps(coco))
    return root


def test_doctor_holds_the_step_to_the_trainers_query_bound(shapes, tmp_path, monkeypatch):
    from sam3tune.doctor import diagnosis

    root = _many_categories(shapes, tmp_path / "many")
    monkeypatch.setattr(diagnosis, "device_memory", lambda device: 2 * 1024**3)  # a 2 GiB machine
    report = diagnose(run_config(root, "data.keep_unused_categories=true"))
    flag = next(f for f in report.flags if f.code == "queries_over_budget")
    assert flag.severity == "warning" and "data.negatives capped to" in flag.message
    capped = int(re.search(r"data\.negatives capped to (\d+)", flag.message)[1])
    assert 0 < capped < 300 and report.batch.queries <= capped + 4  # positives: at most the 4 shapes
    assert report.losses is not None  # the step ran, on the capped queries
    # negatives the user set: training refuses, so doctor flags an error and runs no step
    report = diagnose(run_config(root, "data.keep_unused_categories=true", "data.negatives=all"))
    flag = next(f for f in report.flags if f.code == "queries_over_budget")
    assert flag.severity == "error" and "set data.negatives=K" in flag.message
    assert report.losses is None and report.exit_status != 0
