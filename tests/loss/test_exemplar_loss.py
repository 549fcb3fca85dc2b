"""Exemplar queries go through the unchanged criterion: matched to their targets, and every loss term
reaches the geometry encoder (which only exemplar queries use)."""

import torch

from sam3tune.data import DataConfig, build_train_dataset, collate
from sam3tune.data.config import ExemplarConfig
from sam3tune.data.synth import SynthConfig, generate
from sam3tune.loss import Sam3Criterion
from sam3tune.loss.criterion import LOGGED_ONLY_TERMS, split_key
from sam3tune.model import ModelConfig, build_training_model, load_model

MATCHED_TERMS = ("loss_bbox", "loss_giou", "loss_mask", "loss_dice")


def test_exemplar_queries_flow_through_matching_and_every_term(tmp_path):
    generate(
        SynthConfig(
            image_size=(64, 64), objects_per_image=(2, 3), object_size=(0.25, 0.4), splits=(("train", 3),)
        ),
        tmp_path,
        progress=False,
    )
    bundle = load_model("tiny")
    exemplars = ExemplarConfig(probability=0.5, max_positives=2, max_negatives=1)
    config = DataConfig(root=tmp_path, resolution=bundle.image_size, mask_resolution=16, exemplars=exemplars)
    dataset = build_train_dataset(config, progress=False)
    batch = collate([dataset[i] for i in range(len(dataset))], bundle.tokenize)
    has_exemplars = (batch.exemplar_labels >= 0).any(dim=1)
    # a mixed batch: exemplar queries, positive text queries and negative queries together
    positive = torch.tensor([len(t["boxes"]) > 0 for t in batch.targets])
    assert has_exemplars.any() and (positive & ~has_exemplars).any() and (~positive).any()
    assert not (has_exemplars & ~positive).any()  # only positive queries get exemplars

    model = build_training_model(bundle, ModelConfig(name="tiny", detr_dropout=0.0), exemplars=True).train()
    with torch.no_grad():  # the official initialisation zeroes the box head's last layer: boxes would not
        for param in model.core.detr_decoder.box_head.parameters():  # depend on any input yet
            param.add_(0.05 * torch.randn_like(param))
    criterion = Sam3Criterion()
    outputs = model(**batch.model_inputs())
    predictions, packed = criterion.prepare(outputs, batch.targets)
    matchings = criterion.match(predictions, packed)
    final = matchings.one_to_one[-1]
    for row in (
        torch.nonzero(has_exemplars).flatten().tolist()
    ):  # every target of an exemplar query is matched
        matched = final.target_idx[final.batch_idx == row].tolist()
        assert len(matched) == len(set(matched)) == len(batch.targets[row]["boxes"])
    result = criterion.compute(predictions, packed, matchings)

    geometry = [p for n, p in model.named_parameters() if "geometry_encoder." in n]
    exemplar_rows = torch.nonzero(has_exemplars).flatten()
    checked, skipped = 0, []
    for key, value in result.items():
        if key == "loss" or split_key(key).term in LOGGED_ONLY_TERMS:
            continue
        parts = split_key(key)
        branch = matchings.one_to_many if parts.one_to_many else matchings.one_to_one
        matching = branch[-1 if parts.layer is None else parts.layer]
        if parts.term in MATCHED_TERMS and not torch.isin(matching.batch_idx, exemplar_rows).any():
            skipped.append(
                key
            )  # nothing of an exemplar query matched here (the untrained o2m matcher's IoU bar)
            continue
        grads = torch.autograd.grad(value, geometry, retain_graph=True, allow_unused=True)
        reached = sum(float(g.abs().sum()) for g in grads if g is not None)
        assert reached > 0, f"{key} does not reach the geometry encoder"
        checked += 1
    assert all(split_key(key).one_to_many for key in skipped) and checked > len(skipped)
    assert {"loss_mask", "loss_dice", "loss_bbox", "loss_giou", "loss_ce", "presence_loss"} <= set(result)
    assert torch.isfinite(result["loss"])
