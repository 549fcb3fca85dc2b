"""The distillation teacher: under LoRA the training network itself with its adapters (and trained head
copies) off, equal to the starting model and no second copy; with full fine-tuning a frozen copy."""

import torch

from sam3tune.model import Sam3ForTraining, build_training_model, load_model
from sam3tune.model.config import FinetuneConfig, LoraConfig, ModelConfig
from sam3tune.model.teacher import Teacher


def inputs(tokenize):
    generator = torch.Generator().manual_seed(0)
    input_ids, attention_mask = tokenize(["red block", "blue block", "circle"])
    return {
        "pixel_values": torch.randn(2, 3, 64, 64, generator=generator),
        "image_index": torch.tensor([0, 1, 1]),
        "input_ids": input_ids,
        "attention_mask": attention_mask,
    }


def starting_outputs(batch):
    """The starting model, loaded afresh (same seed), in eval mode."""
    bundle = load_model("tiny", seed=0)
    with torch.no_grad():
        return Sam3ForTraining(bundle.model, bundle.tokenize, one_to_many=False).eval()(**batch)


def close(a, b, atol=1e-6):
    keys = ("pred_logits", "pred_boxes", "presence_logits", "pred_masks")
    return all(torch.allclose(a[k], b[k], atol=atol, rtol=0) for k in keys)


def moved(model):
    """Move every trainable parameter (adapters and the trained head copies) by seeded noise."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param += 0.5 * torch.randn(param.shape, generator=generator)


def test_lora_teacher_is_the_base_model_with_adapters_disabled():
    bundle = load_model("tiny", seed=0)
    lora = FinetuneConfig(mode="lora", lora=LoraConfig(rank=4, alpha=8, dropout=0.0))
    model = build_training_model(bundle, ModelConfig(name="tiny", finetune=lora, detr_dropout=0.0))
    moved(model)
    batch = inputs(bundle.tokenize)
    teacher = Teacher(model)
    assert teacher.model is model and teacher.extra_bytes == 0  # no second copy of the weights

    model.train()
    with torch.no_grad():
        before = model.eval()(**batch)
    model.train()
    taught = teacher(**batch)
    expected = starting_outputs(batch)
    assert close(taught, expected)  # the starting model's answers
    assert not close(before, expected, atol=1e-3)  # which the adapted model no longer gives
    # afterwards the network is as it was: training mode, adapters on and trainable
    assert model.training
    with torch.no_grad():
        assert close(model.eval()(**batch), before, atol=0)
    adapters = [p for n, p in model.named_parameters() if "lora_" in n]
    assert adapters and all(p.requires_grad for p in adapters)


def test_full_fine_tuning_teacher_is_a_frozen_copy():
    bundle = load_model("tiny", seed=0)
    model = build_training_model(bundle, ModelConfig(name="tiny", detr_dropout=0.0))
    batch = inputs(bundle.tokenize)
    teacher = Teacher(model)
    moved(model)  # training moves the student; the copy stays the starting model
    assert close(teacher(**batch), starting_outputs(batch))
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    assert teacher.extra_bytes >= weights
    assert not any(p.requires_grad for p in teacher.model.parameters())
