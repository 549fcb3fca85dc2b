"""The evaluation loop end to end on the real fruits_nuts split with an oracle "model"."""

from functools import partial
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from sam3tune.data import DataConfig, build_eval_dataset, collate
from sam3tune.eval.config import EvalConfig
from sam3tune.eval.ground_truth import ground_truth_from_plan
from sam3tune.eval.model_eval import score_batches

FRUITS = Path("/work/shared/data/fruits_nuts")
pytestmark = pytest.mark.skipif(not FRUITS.is_dir(), reason="shared fruits_nuts dataset not present")

NUM_QUERIES = 10  # more than the most objects of one category in one image (7)


def _tokenize(texts):
    return torch.zeros(len(texts), 4, dtype=torch.int64), torch.ones(len(texts), 4, dtype=torch.int64)


def _oracle(batch, false_fire_category=None):
    """Predicts each query's target boxes (score ~1), pads with junk (score ~0), box-shaped masks."""
    b = batch.num_queries
    logits = torch.full((b, NUM_QUERIES), -12.0)
    boxes = torch.full((b, NUM_QUERIES, 4), 0.1)
    presence = torch.full((b, 1), -12.0)
    masks = torch.full((b, NUM_QUERIES, 16, 16), -12.0)
    for q, target in enumerate(batch.targets):
        n = min(len(target["boxes"]), NUM_QUERIES)
        boxes[q, :n] = target["boxes"][:n]
        logits[q, :n] = 12.0
        if n or int(batch.category_ids[q]) == false_fire_category:
            presence[q] = 12.0
        if not n and int(batch.category_ids[q]) == false_fire_category:
            logits[q, 0] = 12.0  # a confident detection on a negative prompt
    return {"pred_logits": logits, "pred_boxes": boxes, "presence_logits": presence, "pred_masks": masks}


@pytest.fixture(scope="module")
def fruits():
    config = DataConfig(root=FRUITS, resolution=112, masks=False)
    dataset = build_eval_dataset(config, split="train", progress=False)
    loader = DataLoader(dataset, batch_size=4, collate_fn=partial(collate, tokenize=_tokenize))
    return ground_truth_from_plan(dataset.plan), loader


def test_oracle_boxes_score_perfect_box_metrics(fruits):
    gt, loader = fruits
    config = EvalConfig(iou_types=["bbox"])
    metrics, results = score_batches(_oracle, loader, gt, config, progress=False)
    assert metrics.queries == 18 * 3
    assert pytest.approx(1.0, abs=1e-6) == metrics.coco["bbox"].AP
    assert all(v["AP"] == pytest.approx(1.0, abs=1e-6) for v in metrics.coco["bbox"].per_category.values())
    assert pytest.approx(1.0, abs=1e-5) == metrics.cgf1["bbox"].IL_MCC
    assert metrics.cgf1["bbox"].pairs["FP"] == 0
    assert metrics.specificity.false_fire_rate == 0.0
    assert len(results) == 18 * 3 * NUM_QUERIES  # score threshold 0 keeps every proposal


def test_false_fires_on_one_prompt_are_counted(fruits):
    gt, loader = fruits
    config = EvalConfig(iou_types=["bbox"])
    fig = next(c["id"] for c in gt["categories"] if c["name"] == "fig")
    metrics, _ = score_batches(partial(_oracle, false_fire_category=fig), loader, gt, config, progress=False)
    negatives = metrics.specificity.per_category["fig"]["negative_images"]
    assert negatives > 0
    assert metrics.specificity.per_category["fig"]["false_fire_rate"] == 1.0
    assert metrics.specificity.per_category["date"]["false_fire_rate"] in (0.0, None)
    assert metrics.cgf1["bbox"].pairs["FP"] == negatives
    assert metrics.cgf1["bbox"].IL_MCC < 1.0


def test_the_predictions_are_handed_over_before_scoring_fails(fruits, monkeypatch):
    # `sam3tune eval` saves them in on_predicted: a failure while scoring keeps the model's work
    gt, loader = fruits

    def scoring_fails(*args, **kwargs):
        raise RuntimeError("scoring failed")

    monkeypatch.setattr("sam3tune.eval.model_eval.evaluate_predictions", scoring_fails)
    kept = []
    with pytest.raises(RuntimeError, match="scoring failed"):
        score_batches(
            _oracle, loader, gt, EvalConfig(iou_types=["bbox"]), progress=False, on_predicted=kept.append
        )
    assert len(kept) == 1 and len(kept[0]) == 18 * 3 * NUM_QUERIES
