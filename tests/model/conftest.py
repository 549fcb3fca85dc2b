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


#: float32 agreement between two computations of the same maths that batch or order their sums
#: differently (shared image encoding, the CLS token once per image): the tiny model's outputs are O(1),
#: so rounding gives ~1e-7; a real difference (a missing token, a wrong mask) moves them by > 1e-3
SAME_MATHS = {"rtol": 0.0, "atol": 2e-6}


def assert_equals_hf(out: dict, hf) -> None:
    """The training forward's final-layer outputs (and per-layer boxes) equal ``Sam3Model.forward``'s up
    to float32 rounding (HF's boxes are xyxy; layer l + 1 of HF's decoder starts from layer l's box)."""
    torch.testing.assert_close(out["pred_logits"], hf.pred_logits, **SAME_MATHS)
    torch.testing.assert_close(cxcywh_to_xyxy(out["pred_boxes"]), hf.pred_boxes, **SAME_MATHS)
    torch.testing.assert_close(out["presence_logits"], hf.presence_logits, **SAME_MATHS)
    torch.testing.assert_close(out["pred_masks"], hf.pred_masks, **SAME_MATHS)
    for layer, aux in enumerate(out["aux_outputs"]):
        torch.testing.assert_close(aux["pred_boxes"], hf.decoder_reference_boxes[layer + 1], **SAME_MATHS)


def padding_box(queries: int) -> dict:
    """The keyword arguments that make plain ``Sam3Model.forward`` append the geometry encoder's CLS token
    to text-only prompts, as Meta's SAM 3 (sam3tune's ``meta`` prompt-token mode): one padding box
    (label -10) per query, masked out everywhere."""
    return {
        "input_boxes": torch.zeros(queries, 1, 4),
        "input_boxes_labels": torch.full((queries, 1), -10, dtype=torch.long),
    }
