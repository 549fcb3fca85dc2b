import pytest
import torch

from sam3tune.model import (
    FinetuneConfig,
    LoraConfig,
    ModelConfig,
    build_training_model,
    load_model,
    parameter_table,
)
from sam3tune.model.finetune import GEOMETRY_BOX_ONLY, LORA_TARGETS, adapter_counts, lora_target_matches
from tests.model.conftest import total_of


def _rows(model):
    return {r.component: r for r in model.parameter_table()}


def test_full_mode_trains_everything_reachable(tiny):
    total = sum(p.numel() for p in tiny.model.parameters())
    model = build_training_model(tiny, ModelConfig(name="tiny"))
    rows = _rows(model)
    assert rows["all"].total == total and rows["all"].adapters == 0
    assert sum(rows[c].total for c in rows if c != "all") == total
    for component in ("detr_encoder", "detr_decoder", "heads"):
        assert rows[component].trainable == rows[component].total
    # text-prompt training runs the geometry encoder's CLS-token path only (meta prompt-token mode)
    box_only = sum(
        p.numel() for m in GEOMETRY_BOX_ONLY for p in getattr(tiny.model.geometry_encoder, m).parameters()
    )
    assert rows["geometry"].trainable == rows["geometry"].total - box_only > 0
    assert 0 < rows["vision"].trainable < rows["vision"].total  # the unused 0.5x FPN level
    text = model.format_parameter_table()
    assert text.splitlines()[0].split()[:4] == ["component", "total", "adapters", "trainable"]
    assert f"{rows['all'].trainable:,}" in text


def test_frozen_components_get_no_gradient(tiny, batch):
    config = ModelConfig(name="tiny", finetune=FinetuneConfig(freeze=["vision", "text", "detr_encoder"]))
    model = build_training_model(tiny, config)
    rows = _rows(model)
    assert rows["vision"].trainable == rows["text"].trainable == rows["detr_encoder"].trainable == 0
    assert rows["detr_decoder"].trainable == rows["detr_decoder"].total
    total_of(model.train()(*batch)).backward()
    assert tiny.model.vision_encoder.backbone.layers[0].mlp.fc1.weight.grad is None
    assert tiny.model.detr_decoder.layers[0].mlp.fc1.weight.grad is not None


def test_lora_adapts_selected_components_and_trains_heads(tiny, batch):
    base_params = {n: p.detach().clone() for n, p in tiny.model.named_parameters()}
    config = ModelConfig(name="tiny", finetune=FinetuneConfig(mode="lora", lora=LoraConfig(rank=4, alpha=8)))
    model = build_training_model(tiny, config)
    counts = adapter_counts(model)
    # ViT: 2 blocks x (q, k, v, o, fc1, fc2); DETR encoder: 1 x 10; decoder: 2 x 14; mask decoder: 4 + 3
    assert counts == {"vision": 12, "detr_encoder": 10, "detr_decoder": 28, "mask_decoder": 7}
    rows = _rows(model)
    assert rows["vision"].adapters > 0 and rows["text"].adapters == 0
    assert rows["text"].trainable == 0
    assert rows["heads"].trainable == rows["heads"].total > 0
    assert rows["vision"].trainable == rows["vision"].adapters  # base weights frozen
    total_of(model.train()(*batch)).backward()
    lora_b = [(n, p) for n, p in model.named_parameters() if "lora_B" in n]
    assert len(lora_b) == sum(counts.values())
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for _, p in lora_b)
    frozen_with_grad = [n for n, p in model.named_parameters() if not p.requires_grad and p.grad is not None]
    assert frozen_with_grad == []
    assert all(p.grad is not None for n, p in model.named_parameters() if p.requires_grad)
    # adapters start as a no-op: base weights untouched
    for name, param in tiny.model.named_parameters():
        plain = name.replace(".base_layer", "")
        if plain in base_params:
            assert torch.equal(param, base_params[plain])


def test_lora_rank_and_alpha_per_component(tiny):
    lora = LoraConfig(components=["vision", "detr_decoder"], rank=4, rank_per_component={"vision": 2})
    model = build_training_model(
        tiny, ModelConfig(name="tiny", finetune=FinetuneConfig(mode="lora", lora=lora))
    )
    core = model.core
    assert core.vision_encoder.backbone.layers[0].attention.q_proj.lora_A["default"].weight.shape[0] == 2
    assert core.detr_decoder.layers[0].self_attn.q_proj.lora_A["default"].weight.shape[0] == 4


def test_lora_heads_frozen_or_adapted(tiny):
    lora = LoraConfig(components=["detr_decoder"])
    frozen_heads = FinetuneConfig(mode="lora", freeze=["heads"], lora=lora)
    model = build_training_model(tiny, ModelConfig(name="tiny", finetune=frozen_heads))
    assert _rows(model)["heads"].trainable == 0
    adapted = FinetuneConfig(mode="lora", lora=LoraConfig(components=["heads"]))
    other = build_training_model(load_model("tiny"), ModelConfig(name="tiny", finetune=adapted))
    rows = _rows(other)
    assert rows["heads"].adapters > 0 and rows["heads"].trainable == rows["heads"].adapters


def test_lora_component_without_adapters_is_an_error(tiny):
    lora = LoraConfig(components=["vision", "text"], target_modules={"text": r"text_encoder\.no_such_layer"})
    with pytest.raises(ValueError, match=r"\['text'\] received no LoRA adapter"):
        build_training_model(tiny, ModelConfig(name="tiny", finetune=FinetuneConfig(mode="lora", lora=lora)))


def test_lora_target_matches_predicts_the_adapters(tiny):
    lora = LoraConfig(components=["vision", "text"], target_modules={"text": r"text_encoder\.no_such_layer"})
    assert lora_target_matches(tiny.model, lora) == {
        "text": 0,
        "vision": 12,
    }  # 2 blocks x (q, k, v, o, fc1, fc2)
    lora = LoraConfig(components=["vision", "detr_decoder"])
    matches = lora_target_matches(tiny.model, lora)
    model = build_training_model(
        tiny, ModelConfig(name="tiny", finetune=FinetuneConfig(mode="lora", lora=lora))
    )
    counts = adapter_counts(model.sam3)
    assert matches == {c: counts[c] for c in matches}


@pytest.mark.parametrize(
    ("finetune", "message"),
    [
        (FinetuneConfig(freeze=["decoder"]), "unknown component"),
        (
            FinetuneConfig(mode="lora", freeze=["vision"], lora=LoraConfig(components=["vision"])),
            "both frozen",
        ),
        (FinetuneConfig(mode="lora", lora=LoraConfig(components=[])), "at least one component"),
        (
            FinetuneConfig(
                mode="lora", lora=LoraConfig(components=["vision"], rank_per_component={"text": 2})
            ),
            "not in lora.components",
        ),
        (FinetuneConfig(mode="qlora"), "must be 'full' or 'lora'"),
    ],
)
def test_bad_finetune_configs_fail_clearly(tiny, finetune, message):
    with pytest.raises(ValueError, match=message):
        build_training_model(tiny, ModelConfig(name="tiny", finetune=finetune))


def test_lora_targets_match_the_real_architecture_names():
    """Every default target regex selects layers of a full-size Sam3Model (built on the meta device)."""
    import re

    from transformers import Sam3Config, Sam3Model

    with torch.device("meta"):
        model = Sam3Model(Sam3Config())
    names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    expected = {"vision": 32 * 6, "text": 24 * 6 + 1, "detr_encoder": 6 * 10, "detr_decoder": 6 * 14}
    for component, pattern in LORA_TARGETS.items():
        matched = [n for n in names if re.fullmatch(pattern, n)]
        assert matched, component
        if component in expected:
            assert len(matched) == expected[component], component
    assert sum(r.total for r in parameter_table(model)[:-1]) == sum(p.numel() for p in model.parameters())
