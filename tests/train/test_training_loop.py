import json
import os
import signal

import pytest
import torch
from train_standins import ToyCriterion, ToyDataset, ToyModel, toy_collate, toy_role

from sam3tune.train.checkpoint import load_checkpoint
from sam3tune.train.config import LoopConfig, OptimConfig, ScheduleConfig, TrainConfig, ValidationConfig
from sam3tune.train.distributed import DistributedContext
from sam3tune.train.loop import Trainer, TrainingDivergedError, TrainingParts
from sam3tune.train.metrics_log import read_metrics
from sam3tune.train.schedule import InverseSqrtSchedule

CPU = DistributedContext(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))


def _config(**loop) -> TrainConfig:
    defaults = {"epochs": 2, "batch_size": 2, "num_workers": 0, "seed": 3}
    return TrainConfig(
        optim=OptimConfig(lr_transformer=1e-2, lr_vision=5e-3, lr_text=2e-3),
        schedule=ScheduleConfig(warmup_steps=2, cooldown_steps=2, timescale=2),
        loop=LoopConfig(**{**defaults, **loop}),
        val=ValidationConfig(every_epochs=1, best_metric="loss", best_mode="min"),
    )


def _parts(model_seed=0, criterion=None, evaluate=None, dropout=0.1, images=8) -> TrainingParts:
    torch.manual_seed(model_seed)
    return TrainingParts(
        model=ToyModel(dropout=dropout),
        criterion=criterion or ToyCriterion(),
        train_dataset=ToyDataset(images, seed=1),
        collate_fn=toy_collate,
        role_of=toy_role,
        num_vit_blocks=ToyModel.num_vit_blocks,
        val_dataset=ToyDataset(3, seed=2),
        evaluate=evaluate,
        val_criterion=ToyCriterion(),  # validations (step 0 first) leave `criterion`'s call count alone
    )


def _losses(run_dir):
    return [(r["step"], r["loss"]) for r in read_metrics(run_dir / "metrics.jsonl") if r["kind"] == "train"]


def test_run_writes_metrics_checkpoints_and_curve(tmp_path):
    result = Trainer(_config(), _parts(), tmp_path, CPU).fit()
    assert result.status == "completed"
    assert (result.steps, result.total_steps, result.epochs) == (8, 8, 2)
    records = read_metrics(tmp_path / "metrics.jsonl")
    train = [r for r in records if r["kind"] == "train"]
    val = [r for r in records if r["kind"] == "val"]
    assert [r["step"] for r in train] == list(range(1, 9))
    assert {"loss", "loss_bbox", "loss_ce", "grad_norm", "lr_factor", "seconds"} <= set(train[0])
    assert [(r["step"], r["epoch"]) for r in val] == [(0, 0), (4, 1), (8, 2)]  # step 0: the starting model
    assert records[0]["kind"] == "val"
    assert train[-1]["loss"] < train[0]["loss"]
    meta = json.loads((tmp_path / "checkpoints" / "last" / "meta.json").read_text())
    assert (meta["step"], meta["epoch"]) == (8, 2)
    assert result.best_checkpoint is not None and result.best_value == min(r["loss"] for r in val[1:])
    assert result.loss_curve == tmp_path / "loss_curve.png" and result.loss_curve.stat().st_size > 10_000
    assert any((tmp_path / "tb").iterdir())
    assert result.last_val["loss"] == val[-1]["loss"]


def test_learning_rate_of_every_group_follows_the_schedule(tmp_path):
    trainer = Trainer(_config(epochs=3), _parts(), tmp_path, CPU)
    schedule = InverseSqrtSchedule(2, 2, 2, total_steps=12)
    seen = []
    groups = trainer.optimizer.param_groups
    trainer.fit(on_step_end=lambda r: seen.append({g["name"]: g["lr"] for g in groups}))
    assert len(seen) == 12
    for step, lrs in enumerate(seen):
        factor = schedule.factor(step)
        assert lrs["transformer"] == pytest.approx(1e-2 * factor, rel=1e-12, abs=0)
        assert lrs["transformer.no_wd"] == pytest.approx(1e-2 * factor, rel=1e-12, abs=0)
        assert lrs["vision.block01"] == pytest.approx(5e-3 * 0.9 * factor, rel=1e-12, abs=0)
        assert lrs["vision.block00.no_wd"] == pytest.approx(5e-3 * 0.81 * factor, rel=1e-12, abs=0)
        assert lrs["vision.stem"] == pytest.approx(5e-3 * 0.729 * factor, rel=1e-12, abs=0)
        assert lrs["text"] == pytest.approx(2e-3 * factor, rel=1e-12, abs=0)
    assert seen[0]["transformer"] == 0.0  # warm-up starts at zero


@pytest.mark.parametrize("stop_at", [3, 4, 6])  # mid-epoch, epoch end, second epoch
def test_stopped_and_resumed_run_equals_uninterrupted_run(tmp_path, stop_at):
    reference = tmp_path / "reference"
    Trainer(_config(), _parts(), reference, CPU).fit()

    run = tmp_path / "run"
    trainer = Trainer(_config(), _parts(), run, CPU)
    result = trainer.fit(on_step_end=lambda r: r["step"] == stop_at and trainer.request_stop())
    assert (result.status, result.steps) == ("interrupted", stop_at)
    assert load_checkpoint(run / "checkpoints" / "last")[1]["step"] == stop_at

    # the resumed model starts from other random weights: everything must come from the checkpoint
    resumed = Trainer(_config(), _parts(model_seed=99), run, CPU, resume=True).fit()
    assert resumed.status == "completed" and resumed.steps == 8
    assert _losses(run) == _losses(reference)
    final = load_checkpoint(run / "checkpoints" / "last")[0]
    for name, tensor in load_checkpoint(reference / "checkpoints" / "last")[0].items():
        assert torch.equal(final[name], tensor), name


def test_sigint_stops_cleanly_after_the_step(tmp_path):
    before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN under `nohup ... &`
    trainer = Trainer(_config(), _parts(), tmp_path, CPU)
    result = trainer.fit(on_step_end=lambda r: r["step"] == 2 and os.kill(os.getpid(), signal.SIGINT))
    assert (result.status, result.steps) == ("interrupted", 2)
    assert load_checkpoint(tmp_path / "checkpoints" / "last")[1]["step"] == 2
    assert signal.getsignal(signal.SIGINT) is before  # handler restored


def test_nonfinite_loss_skips_the_step(tmp_path):
    trainer = Trainer(_config(epochs=1), _parts(criterion=ToyCriterion(nan_at_calls={2})), tmp_path, CPU)
    before = {}
    trainer_params = dict(trainer.module.named_parameters())

    def remember(record):
        if record["step"] == 1:
            before.update({n: p.detach().clone() for n, p in trainer_params.items()})
        if record["step"] == 2:
            assert record["skipped"] and record["loss"] != record["loss"]
            for name, param in trainer_params.items():
                assert torch.equal(param, before[name]), name

    result = trainer.fit(on_step_end=remember)
    assert result.status == "completed" and result.skipped_steps == 1
    logged = [r for r in read_metrics(tmp_path / "metrics.jsonl") if r["kind"] == "train"]
    assert [r["skipped"] for r in logged] == [False, True, False, False]
    assert logged[1]["loss"] is None


def test_consecutive_nonfinite_losses_abort_with_a_checkpoint(tmp_path):
    config = _config(max_consecutive_nonfinite=3)
    parts = _parts(criterion=ToyCriterion(nan_at_calls={2, 3, 4}))
    trainer = Trainer(config, parts, tmp_path, CPU)
    after_first = {}
    with pytest.raises(TrainingDivergedError, match=r"3 optimizer steps in a row \(steps 2-4") as info:
        trainer.fit(
            on_step_end=lambda r: (
                r["step"] == 1
                and after_first.update({k: v.clone() for k, v in trainer.module.state_dict().items()})
            )
        )
    assert str(tmp_path / "checkpoints" / "last") in str(info.value)
    model_state, state, _ = load_checkpoint(tmp_path / "checkpoints" / "last")
    assert (state["step"], state["skipped_steps"]) == (4, 3)
    for name, tensor in model_state.items():
        assert torch.equal(tensor, after_first[name]), name


def test_gradient_accumulation_equals_one_larger_batch(tmp_path):
    def run(directory, **loop):
        parts = _parts(criterion=ToyCriterion(per_query_mean=True), dropout=0.0)
        trainer = Trainer(_config(epochs=1, **loop), parts, directory, CPU)
        trainer.fit()
        return trainer.module.state_dict(), _losses(directory)

    whole, whole_losses = run(tmp_path / "a", batch_size=2, grad_accum_steps=1)
    accumulated, accumulated_losses = run(tmp_path / "b", batch_size=1, grad_accum_steps=2)
    assert [s for s, _ in accumulated_losses] == [1, 2, 3, 4]
    for (_, x), (_, y) in zip(whole_losses, accumulated_losses, strict=True):
        assert x == pytest.approx(y, rel=1e-5)
    for name, tensor in whole.items():
        torch.testing.assert_close(accumulated[name], tensor, rtol=1e-5, atol=1e-6)


def test_gradients_are_clipped_to_the_configured_norm(tmp_path):
    trainer = Trainer(_config(epochs=1), _parts(), tmp_path, CPU)
    norms = []
    step = trainer.optimizer.step

    def step_and_measure(*args, **kwargs):
        grads = [p.grad for p in trainer.trainable if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))
        return step(*args, **kwargs)

    trainer.optimizer.step = step_and_measure
    records = []
    trainer.fit(on_step_end=records.append)
    assert all(r["grad_norm"] > 0.1 for r in records)  # logged: the norm before clipping
    assert norms == pytest.approx([0.1] * 4, rel=1e-4)


def test_best_checkpoint_follows_the_chosen_metric(tmp_path):
    scores = iter([0.9, 0.2, 0.5, 0.4])  # zero-shot first: the best checkpoint is among trained weights
    config = _config(epochs=3)
    config.val = ValidationConfig(every_epochs=1, best_metric="bbox_AP50", best_mode="max")
    result = Trainer(config, _parts(evaluate=lambda model: {"bbox_AP50": next(scores)}), tmp_path, CPU).fit()
    assert result.best_value == 0.5
    assert json.loads((tmp_path / "checkpoints" / "best" / "meta.json").read_text())["step"] == 8
    val = [r for r in read_metrics(tmp_path / "metrics.jsonl") if r["kind"] == "val"]
    assert [r["bbox_AP50"] for r in val] == [0.9, 0.2, 0.5, 0.4]
    assert all("loss" in r for r in val)


def test_unknown_best_metric_is_a_clear_error_before_any_step(tmp_path):
    config = _config(epochs=1)
    config.val = ValidationConfig(every_epochs=1, best_metric="segm_AP")
    with pytest.raises(ValueError, match=r"segm_AP.*not among the validation results"):
        Trainer(config, _parts(), tmp_path, CPU).fit()
    # the zero-shot validation of step 0 finds it before any training step: no epoch is spent first
    assert not (tmp_path / "checkpoints").exists()
    assert not [r for r in read_metrics(tmp_path / "metrics.jsonl") if r["kind"] == "train"]


def test_a_failed_validation_keeps_the_trained_epoch(tmp_path):
    calls = iter([{"bbox_AP50": 0.1}])  # the zero-shot validation passes, the one after epoch 1 fails

    def evaluate(model):
        result = next(calls, None)
        if result is None:
            raise RuntimeError("evaluation broke")
        return result

    config = _config(epochs=1)
    config.val = ValidationConfig(every_epochs=1, best_metric="bbox_AP50")
    with pytest.raises(RuntimeError, match="evaluation broke"):
        Trainer(config, _parts(evaluate=evaluate), tmp_path, CPU).fit()
    # the epoch trained before the failed validation is kept: `last` is there to resume from
    assert json.loads((tmp_path / "checkpoints" / "last" / "meta.json").read_text())["step"] == 4


def test_max_steps_caps_the_run_and_its_schedule(tmp_path):
    result = Trainer(_config(epochs=5, max_steps=6), _parts(), tmp_path, CPU).fit()
    assert (result.steps, result.total_steps, result.epochs) == (6, 6, 1)
    val = [r for r in read_metrics(tmp_path / "metrics.jsonl") if r["kind"] == "val"]
    assert [r["step"] for r in val] == [0, 4, 6]  # zero-shot, after epoch 1 and at the end of the run


def test_last_checkpoint_every_n_epochs_and_at_the_end(tmp_path):
    config = _config(epochs=3, checkpoint_every_epochs=2)
    config.val = ValidationConfig(every_epochs=0, best_metric="loss", best_mode="min")
    trainer = Trainer(config, _parts(), tmp_path, CPU)
    saved = []
    save = trainer._save
    trainer._save = lambda name: saved.append((name, trainer.progress.step)) or save(name)
    trainer.fit()
    assert saved == [("last", 8), ("last", 12)]


def test_step_checkpoints_fire_on_the_last_step_of_an_epoch(tmp_path):
    """`checkpoint_every_steps` counts every step, the last of an epoch included: with one step per epoch
    and epoch checkpoints and validation (which saves on improvement) off, a checkpoint is still written
    at every due step."""
    config = _config(epochs=4, batch_size=8, checkpoint_every_epochs=0, checkpoint_every_steps=2)
    config.val.every_epochs = 0
    trainer = Trainer(config, _parts(), tmp_path, CPU)
    saved_at = []
    save = trainer._save
    trainer._save = lambda name: (saved_at.append((name, trainer.progress.step)), save(name))
    trainer.fit()
    assert trainer.steps_per_epoch == 1
    assert [step for name, step in saved_at if name == "last"] == [2, 4]  # 4: also the run's end
