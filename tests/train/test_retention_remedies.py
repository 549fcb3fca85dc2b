"""The forgetting remedies in training: pseudo-label replay queries reach the official criterion
unchanged, distilled-only queries stay out of it, the distillation terms join the total, and a run keeps
the starting model's answers so that a resume rebuilds the same queries."""

import json
import os
import signal

import pytest
import torch
from coco_fixture import write_dataset

from sam3tune.config import load_config
from sam3tune.loss import Sam3Criterion
from sam3tune.loss.predictions import select_queries
from sam3tune.run_dir import RunDir
from sam3tune.train import retention as retention_module
from sam3tune.train.config import TrainConfig
from sam3tune.train.distributed import DistributedContext
from sam3tune.train.loop import forward_and_loss
from sam3tune.train.metrics_log import read_metrics
from sam3tune.train.recipe import build_training_parts, train

CPU = DistributedContext(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))
ARGS = [
    "model.name=tiny", "loop.num_workers=0", "loop.batch_size=2", "loop.epochs=1", "val.every_epochs=0",
    "model.detr_dropout=0.0",
    # the random tiny model scores far below 0.5: low thresholds give it confident answers to replay
    "retention.prompts=[green block, yellow block]", "retention.score_threshold=0.05",
    "retention.replay.negative_threshold=0.01",
]  # fmt: skip


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("data"), train=4, valid=2)


def config(dataset, *extra):
    return load_config(TrainConfig, None, [f"data.root={dataset}", *ARGS, *extra])


class Spy:
    """The official criterion, recording what it was given."""

    def __init__(self, criterion):
        self.criterion, self.calls = criterion, []

    def __call__(self, outputs, targets):
        self.calls.append((outputs, targets))
        return self.criterion(outputs, targets)


def first_batch(parts):
    return parts.collate_fn([parts.train_dataset[0], parts.train_dataset[1]])


def test_replay_queries_reach_the_official_criterion_unchanged(dataset):
    parts, _, _ = build_training_parts(config(dataset, "retention.replay.enabled=true"), CPU)
    queries = parts.train_dataset.retention
    assert queries.objects > 0 and parts.distiller is None
    batch = first_batch(parts)
    retention_ids = set(queries.categories)
    replayed = [i for i, c in enumerate(batch.category_ids.tolist()) if c in retention_ids]
    assert replayed and any(len(batch.targets[i]["boxes"]) for i in replayed)  # pseudo-labels as targets
    assert batch.supervised.all()  # replay queries are ordinary supervised queries
    spy = Spy(parts.criterion)
    torch.manual_seed(0)
    losses = forward_and_loss(parts.model, batch, spy, bf16=False)
    ((outputs, targets),) = spy.calls
    assert targets is batch.targets and outputs["pred_logits"].shape[0] == batch.num_queries
    assert isinstance(spy.criterion, Sam3Criterion) and not any(k.startswith("distill") for k in losses)


def test_distilled_only_queries_stay_out_of_the_criterion_and_add_the_distillation_terms(dataset):
    parts, _, _ = build_training_parts(config(dataset, "retention.distill.weight=2.0"), CPU)
    batch = first_batch(parts)
    distilled = batch.distilled.nonzero().squeeze(1).tolist()
    assert distilled and not batch.supervised[distilled].any()  # no replay: no target for the criterion
    spy = Spy(parts.criterion)
    parts.model.train()
    torch.manual_seed(0)
    losses = forward_and_loss(parts.model, batch, spy, bf16=False, distiller=parts.distiller)
    ((outputs, targets),) = spy.calls
    supervised = batch.supervised.nonzero().squeeze(1)
    assert outputs["pred_logits"].shape[0] == len(supervised) == batch.num_queries - len(distilled)
    assert targets == [batch.targets[i] for i in supervised.tolist()]
    # the total = the criterion's (on the supervised queries) + the weighted distillation terms
    torch.manual_seed(0)
    alone = parts.criterion(select_queries(parts.model(**batch.model_inputs()), supervised), targets)
    assert losses["loss"].item() == pytest.approx(alone["loss"].item() + losses["distill"].item(), rel=1e-5)
    parts_sum = sum(
        losses[k] for k in ("distill_logits", "distill_presence", "distill_boxes", "distill_masks")
    )
    assert losses["distill"].item() == pytest.approx(2.0 * parts_sum.item(), rel=1e-5)
    losses["loss"].backward()  # the gradient flows to the student
    assert any(p.grad is not None for p in parts.model.parameters())


def test_a_run_keeps_the_starting_answers_and_a_resume_reads_them_back(dataset, tmp_path, monkeypatch):
    run = config(dataset, "retention.replay.enabled=true", "retention.distill.weight=1.0",
                 f"output_dir={tmp_path}", "run_name=r", "loop.epochs=2")  # fmt: skip
    interrupted = train(run, on_step_end=lambda r: r["step"] == 2 and os.kill(os.getpid(), signal.SIGINT))
    assert interrupted.status == "interrupted" and interrupted.steps == 2
    saved = json.loads(RunDir(tmp_path / "r").retention_detections_file.read_text())
    assert saved and {"image_id", "category_id", "bbox", "score"} <= set(saved[0])

    def refuse(*args, **kwargs):
        raise AssertionError("a resumed run must read the starting model's answers back, not recompute them")

    monkeypatch.setattr(retention_module, "_starting_answers", refuse)
    result = train(RunDir(tmp_path / "r").config(), resume=tmp_path / "r")
    assert result.status == "completed"
    records = read_metrics(tmp_path / "r" / "metrics.jsonl")
    assert all("distill" in r for r in records if r["kind"] == "train")


def test_remedy_settings_are_checked_with_their_keys():
    from sam3tune.config import InvalidValue

    with pytest.raises(InvalidValue, match=r"retention\.distill\.weight=1\.0: needs retention\.prompts"):
        load_config(TrainConfig, None, ["retention.distill.weight=1"])
    with pytest.raises(InvalidValue, match=r"retention\.replay\.negative_threshold=0\.6: must be <="):
        load_config(TrainConfig, None, ["retention.prompts=[cat]", "retention.replay.enabled=true",
                                        "retention.replay.negative_threshold=0.6"])  # fmt: skip
    # a low reference threshold alone is fine while replay is off
    assert (
        load_config(TrainConfig, None, ["retention.score_threshold=0.01"]).retention.score_threshold == 0.01
    )
