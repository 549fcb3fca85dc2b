"""Batch-side failure modes: targets from a custom dataset or built by hand."""

import functools

import pytest
import torch

from sam3tune.data import DataConfig, build_train_dataset, collate
from sam3tune.doctor.diagnosis import diagnose_batch
from sam3tune.doctor.target_checks import target_flags
from sam3tune.loss.box_ops import box_cxcywh_to_xyxy
from sam3tune.model import ModelConfig, build_training_model, load_model
from sam3tune.train.config import TrainConfig


@pytest.fixture
def tiny_and_batch(shapes):
    bundle = load_model("tiny")
    model = build_training_model(bundle, ModelConfig(name="tiny"))
    dataset = build_train_dataset(DataConfig(root=shapes, resolution=64), progress=False)
    batch = functools.partial(collate, tokenize=bundle.tokenize)([dataset[0], dataset[1]])
    return model, batch


def _with_boxes(batch, convert):
    batch.targets = [dict(t, boxes=convert(t["boxes"])) for t in batch.targets]
    return batch


def test_the_real_batch_is_clean(tiny_and_batch):
    model, batch = tiny_and_batch
    assert target_flags(batch.targets, dataset_targets=10) == []
    assert diagnose_batch(model, batch).flags == []


def test_boxes_in_pixels(tiny_and_batch):
    model, batch = tiny_and_batch
    batch = _with_boxes(batch, lambda boxes: boxes * 64)
    report = diagnose_batch(model, batch)
    assert report.codes() == {"boxes_not_normalised"}
    assert "looks like pixels" in report.flags[0].message and "targets[" in report.flags[0].message
    assert report.losses is None and report.exit_status == 1


def test_boxes_as_corners_disagree_with_their_masks(tiny_and_batch):
    model, batch = tiny_and_batch
    batch = _with_boxes(batch, box_cxcywh_to_xyxy)  # xyxy in [0, 1] passed off as cxcywh
    report = diagnose_batch(model, batch)
    assert "boxes_masks_disagree" in report.codes("warning")
    assert report.losses is not None  # the criterion accepts them: only the doctor can tell


def test_batch_without_targets(tiny_and_batch):
    model, batch = tiny_and_batch
    batch.targets = [{"boxes": torch.zeros(0, 4)} for _ in batch.targets]
    report = diagnose_batch(model, batch)
    assert "batch_without_targets" in report.codes("error")
    assert report.losses.term_totals()["loss_bbox"] == 0.0
    # From a dataset that has targets elsewhere it is only a warning.
    (flag,) = target_flags(batch.targets, dataset_targets=120)
    assert (flag.code, flag.severity) == ("batch_without_targets", "warning")
    assert "(the dataset has 120)" in flag.message


def test_invisible_objects_count_as_no_target():
    targets = [{"boxes": torch.tensor([[0.5, 0.5, 0.0, 0.2]])}]
    (flag,) = target_flags(targets)
    assert flag.code == "batch_without_targets" and "none with positive width and height" in flag.message


def test_boxes_reaching_outside_the_image():
    # COCO xywh (normalised) read as cxcywh: x = 0.02 with w = 0.3 reaches to -0.13.
    targets = [{"boxes": torch.tensor([[0.02, 0.4, 0.3, 0.2], [0.5, 0.5, 0.2, 0.2]])}]
    (flag,) = target_flags(targets)
    assert flag.code == "boxes_outside_image"
    assert "1 of 2" in flag.message and "targets[0]['boxes'][0]" in flag.message


def test_box_mask_agreement_is_measured():
    masks = torch.zeros(1, 32, 32, dtype=torch.bool)
    masks[0, 8:16, 4:20] = True  # rows 8..15, columns 4..19
    box = torch.tensor([[12 / 32, 12 / 32, 16 / 32, 8 / 32]])  # the mask's extent as cxcywh
    assert target_flags([{"boxes": box, "masks": masks}]) == []
    shifted = box + torch.tensor([[0.3, 0.3, 0.0, 0.0]])  # no overlap, still inside the image
    (flag,) = target_flags([{"boxes": shifted, "masks": masks}])
    assert flag.code == "boxes_masks_disagree" and "0.00 over 1 objects" in flag.message
    # Invalid masks are left out of the comparison.
    assert target_flags([{"boxes": shifted, "masks": masks, "is_valid_mask": torch.tensor([False])}]) == []


def test_diagnose_batch_uses_the_given_config(tiny_and_batch):
    model, batch = tiny_and_batch
    config = TrainConfig()
    config.loss.weights.loss_giou = 4.0
    report = diagnose_batch(model, batch, config)
    assert report.codes() == {"weights_differ_from_recipe"}
    giou = [t for t in report.losses.terms if t.key == "loss_giou"]
    assert giou[0].weight == 4.0
