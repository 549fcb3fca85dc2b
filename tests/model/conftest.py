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
