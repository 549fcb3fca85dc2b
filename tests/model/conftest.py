import pytest
import torch

from sam3tune.model import load_model


@pytest.fixture
def tiny():
    """A fresh tiny bundle (models are modified in place by build_training_model)."""
    return load_model("tiny")


@pytest.fixture
def batch(tiny):
    """Two unique images, four queries (a prompt repeated across images, one padded prompt)."""
    generator = torch.Generator().manual_seed(1)
    size = tiny.image_size
    pixel_values = torch.randn(2, 3, size, size, generator=generator)
    image_index = torch.tensor([0, 1, 1, 0])
    input_ids, attention_mask = tiny.tokenize(["red apple", "a small brown nut", "banana", "red apple"])
    return pixel_values, image_index, input_ids, attention_mask


def total_of(outputs: dict) -> torch.Tensor:
    """A scalar touching every output tensor (top level and aux), for backward in tests."""
    total = sum(v.float().mean() for v in outputs.values() if torch.is_tensor(v))
    for aux in outputs["aux_outputs"]:
        total = total + sum(v.mean() for v in aux.values())
    return total


def cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)


def assert_equals_hf(out: dict, hf) -> None:
    """The training forward's final-layer outputs (and per-layer boxes) equal ``Sam3Model.forward``'s
    bit for bit (HF's boxes are xyxy; layer l + 1 of HF's decoder starts from layer l's box)."""
    assert torch.equal(out["pred_logits"], hf.pred_logits)
    assert torch.equal(cxcywh_to_xyxy(out["pred_boxes"]), hf.pred_boxes)
    assert torch.equal(out["presence_logits"], hf.presence_logits)
    assert torch.equal(out["pred_masks"], hf.pred_masks)
    for layer, aux in enumerate(out["aux_outputs"]):
        assert torch.equal(aux["pred_boxes"], hf.decoder_reference_boxes[layer + 1])
