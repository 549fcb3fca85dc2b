"""The step's pieces shared with the doctor: the precision decision and ``forward_and_loss``."""

import math

import torch
from train_standins import ToyCriterion, ToyDataset, ToyModel, toy_collate

from sam3tune.train.loop import TrainingProgress, forward_and_loss, uses_bf16


def test_precision_decision():
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert [uses_bf16(amp, cpu) for amp in ("auto", "bf16", "off")] == [False, True, False]
    assert [uses_bf16(amp, cuda) for amp in ("auto", "bf16", "off")] == [True, True, False]


class _Recording(ToyCriterion):
    def __call__(self, outputs, targets):
        self.dtypes = {k: v.dtype for k, v in outputs.items()}
        self.outputs = outputs
        return super().__call__(outputs, targets)


def test_outputs_reach_the_criterion_as_the_model_made_them():
    torch.manual_seed(0)
    model, batch = ToyModel(dropout=0.0), toy_collate([ToyDataset(2)[i] for i in range(2)])
    criterion = _Recording()
    full = forward_and_loss(model, batch, criterion, bf16=False)
    assert set(criterion.dtypes.values()) == {torch.float32}
    low = forward_and_loss(model, batch, criterion, bf16=True)
    assert criterion.dtypes["pred_logits"] == torch.bfloat16  # no float32 copy in between
    assert math.isclose(low["loss"].item(), full["loss"].item(), rel_tol=2e-2)


def test_non_finite_outputs_are_zeroed_and_the_total_is_nan():
    model, batch = ToyModel(dropout=0.0), toy_collate([ToyDataset(2)[i] for i in range(2)])
    with torch.no_grad():
        model.detr_decoder.class_head.bias.fill_(float("inf"))
    criterion = _Recording()
    losses = forward_and_loss(model, batch, criterion, bf16=False)
    assert torch.isnan(losses["loss"]) and torch.all(criterion.outputs["pred_logits"] == 0)


def test_progress_round_trips_through_its_state_dict():
    progress = TrainingProgress(step=7, epoch=1, step_in_epoch=3, skipped_steps=2, best_value=0.5)
    restored = TrainingProgress()
    restored.load_state_dict({**progress.state_dict(), "unrelated": 1})
    assert restored == progress
