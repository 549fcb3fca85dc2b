"""The model card's retention rows and confusion line, from a hand-made evaluation report."""

from sam3tune.config import load_config
from sam3tune.ship.model_card import ModelCardInputs, render_model_card
from sam3tune.train.config import TrainConfig


def _run(summary, confusion):
    metrics = {
        "coco": {"bbox": {"per_category": {"moon": {"AP50": 0.5}}}},
        "specificity": {"per_category": {"moon": {"false_fire_rate": 0.1}}},
        "confusion": {"counts": confusion},
        "retention": {"prompts": ["circle", "square"], "score_threshold": 0.5, "images": 200},
    }
    return {"summary": summary, "metrics": metrics}


def test_card_shows_what_the_untuned_prompts_kept_and_the_confusions():
    report = {
        "context": {"data": "shapes (split test)"},
        "baseline": _run({"bbox_AP50": 0.03, "retention_bbox_AP": 1.0, "retention_true_bbox_AP50": 0.6}, {}),
        "model": _run(
            {"bbox_AP50": 0.7, "retention_bbox_AP": 0.45, "retention_true_bbox_AP50": 0.3},
            {"moon": {"heart": 4, "circle": 1}, "star": {"heart": 2}},
        ),
    }
    config = load_config(TrainConfig, None, ["model.name=demo", "data.root=shapes"])
    inputs = ModelCardInputs("run", config, [], None, report, "merged", False)
    card = render_model_card(inputs)
    assert "| retention box AP (untuned prompts vs the starting model) | 100.0 | 45.0 | -55.0 |" in card
    assert "| box AP50 of the untuned prompts (labelled) | 60.0 | 30.0 | -30.0 |" in card
    assert "retention mask AP" not in card  # not measured: no row
    assert "Untuned prompts (circle, square)" in card and "on 200 images" in card
    assert (
        "moon -> heart: 4 (zero-shot 0); star -> heart: 2 (zero-shot 0); moon -> circle: 1 (zero-shot 0)"
        in card
    )
