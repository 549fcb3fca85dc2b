"""Exemplar (box) prompts in the training forward: equal to ``Sam3Model.forward`` with the same boxes,
text-only queries unchanged in mixed batches (in both prompt-token modes), all of the geometry encoder
trainable only with exemplars (its CLS-token path in ``meta`` mode without them)."""

import pytest
import torch

from sam3tune.model import FinetuneConfig, LoraConfig, ModelConfig, build_training_model, load_model
from sam3tune.model.finetune import GEOMETRY_BOX_ONLY, adapter_counts
from tests.model.conftest import assert_equals_hf, cxcywh_to_xyxy, total_of

# 4 queries: 1 positive; 2 positives; 1 positive + 1 negative; 3 boxes (so K = 3 and the others pad)
BOXES = torch.tensor(
    [
        [[0.3, 0.3, 0.2, 0.2], [0, 0, 0, 0], [0, 0, 0, 0]],
        [[0.6, 0.4, 0.3, 0.5], [0.2, 0.7, 0.1, 0.1], [0, 0, 0, 0]],
        [[0.5, 0.5, 0.4, 0.4], [0.8, 0.2, 0.2, 0.3], [0, 0, 0, 0]],
        [[0.1, 0.1, 0.1, 0.1], [0.9, 0.9, 0.15, 0.1], [0.5, 0.25, 0.6, 0.3]],
    ]
)
LABELS = torch.tensor([[1, -1, -1], [1, 1, -1], [1, 0, -1], [1, 0, 1]])


def _hf(tiny, batch, rows, boxes=None, labels=None):
    pixel_values, image_index, input_ids, attention_mask = batch
    kwargs = {}
    if boxes is not None:  # HF marks padding boxes with label -10
        kwargs = {
            "input_boxes": boxes[rows],
            "input_boxes_labels": labels[rows].masked_fill(labels[rows] < 0, -10),
        }
    return tiny.model(
        pixel_values=pixel_values[image_index[rows]],
        input_ids=input_ids[rows],
        attention_mask=attention_mask[rows],
        **kwargs,
    )


def test_eval_outputs_equal_hf_forward_with_the_same_boxes(tiny, batch):
    model = build_training_model(tiny, ModelConfig(name="tiny"), exemplars=True).eval()
    rows = torch.arange(4)
    with torch.no_grad():
        ours = model(*batch, exemplar_boxes=BOXES, exemplar_labels=LABELS)
        hf = _hf(tiny, batch, rows, BOXES, LABELS)
        text_only = model(*batch)
    assert_equals_hf(ours, hf)
    # the boxes matter: every query's scores move
    change = (ours["pred_logits"] - text_only["pred_logits"]).abs().amax(dim=1)
    assert (change > 1e-4).all()


@pytest.mark.parametrize("mode", ["meta", "hf"])
def test_mixed_batch_text_queries_equal_a_text_only_forward(tiny, batch, mode):
    """Text queries next to exemplar queries: in ``meta`` mode their CLS token comes from the geometry
    encoder run on padding boxes, in a text-only batch from its CLS path alone; both agree."""
    model = build_training_model(tiny, ModelConfig(name="tiny", prompt_token=mode), exemplars=True).eval()
    labels = LABELS.clone()
    labels[[1, 3]] = -1  # queries 1 and 3 have no exemplar
    with torch.no_grad():
        mixed = model(*batch, exemplar_boxes=BOXES, exemplar_labels=labels)
        text_only = model(*batch)
        with_boxes = _hf(tiny, batch, torch.tensor([0, 2]), BOXES, labels)
    for key in ("pred_logits", "pred_boxes", "presence_logits", "pred_masks"):
        torch.testing.assert_close(mixed[key][[1, 3]], text_only[key][[1, 3]], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mixed["pred_logits"][[0, 2]], with_boxes.pred_logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cxcywh_to_xyxy(mixed["pred_boxes"][[0, 2]]), with_boxes.pred_boxes)
    torch.testing.assert_close(mixed["pred_masks"][[0, 2]], with_boxes.pred_masks, rtol=1e-5, atol=1e-5)


def test_negative_label_differs_from_positive(tiny, batch):
    model = build_training_model(tiny, ModelConfig(name="tiny"), exemplars=True).eval()
    flipped = LABELS.clone()
    flipped[2, 1] = 1
    with torch.no_grad():
        a = model(*batch, exemplar_boxes=BOXES, exemplar_labels=LABELS)["pred_logits"]
        b = model(*batch, exemplar_boxes=BOXES, exemplar_labels=flipped)["pred_logits"]
    assert torch.equal(a[[0, 1, 3]], b[[0, 1, 3]])
    assert (a[2] - b[2]).abs().max() > 1e-4


def _geometry(model):
    return {n: p for n, p in model.named_parameters() if "geometry_encoder." in n}


def test_geometry_encoder_is_frozen_without_exemplars_but_its_cls_path_in_meta_mode(tiny, batch):
    model = build_training_model(tiny, ModelConfig(name="tiny")).train()
    trainable = {
        n.removeprefix("sam3.geometry_encoder.") for n, p in _geometry(model).items() if p.requires_grad
    }
    assert trainable and not any(n.startswith(GEOMETRY_BOX_ONLY) for n in trainable)
    assert {"cls_embed.weight", "final_proj.weight", "output_layer_norm.weight"} <= trainable
    total_of(model(*batch)).backward()
    # The token the gradient must reach through its own path: embedding, the layer's value/output paths,
    # MLP and norms. Left out: what the maths zeroes for a prompt of one token (self-attention over one
    # key is a softmax of one element, 1 for any query or key: q_proj and k_proj of self_attn get no
    # gradient) and any key bias (it shifts every logit of a query alike, which the softmax removes),
    # whose gradients are rounding noise (1e-13) or exactly 0 depending on the CPU.
    reached = {
        n
        for n in trainable
        if not (
            n.startswith(("layers.0.self_attn.q_proj", "layers.0.self_attn.k_proj")) or "k_proj.bias" in n
        )
    }
    assert {"layers.0.self_attn.v_proj.weight", "layers.0.mlp.fc1.weight", "cls_embed.weight"} <= reached
    grads = {n: float(model.get_parameter(f"sam3.geometry_encoder.{n}").grad.abs().sum()) for n in reached}
    assert all(g > 0 for g in grads.values()), grads
    hf_mode = build_training_model(load_model("tiny"), ModelConfig(name="tiny", prompt_token="hf"))
    assert _geometry(hf_mode) and not any(p.requires_grad for p in _geometry(hf_mode).values())


def test_with_exemplars_every_trainable_parameter_gets_a_gradient(tiny, batch):
    model = build_training_model(tiny, ModelConfig(name="tiny"), exemplars=True).train()
    assert all(p.requires_grad for p in _geometry(model).values())
    total_of(model(*batch, exemplar_boxes=BOXES, exemplar_labels=LABELS)).backward()
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert [n for n in trainable if model.get_parameter(n).grad is None] == []
    assert all(float(p.grad.abs().sum()) > 0 for p in _geometry(model).values())


def test_geometry_can_be_frozen_or_lora_adapted_with_exemplars(tiny):
    frozen = build_training_model(
        tiny, ModelConfig(name="tiny", finetune=FinetuneConfig(freeze=["geometry"])), exemplars=True
    )
    assert not any(p.requires_grad for p in _geometry(frozen).values())
    lora = FinetuneConfig(mode="lora", lora=LoraConfig(components=["geometry", "detr_decoder"], rank=2))
    with pytest.raises(ValueError, match="geometry"):  # hf mode without exemplars never runs it
        build_training_model(tiny, ModelConfig(name="tiny", finetune=lora, prompt_token="hf"))
    cls_path = build_training_model(load_model("tiny"), ModelConfig(name="tiny", finetune=lora))
    trained = [n for n, p in _geometry(cls_path).items() if p.requires_grad]
    assert trained and all("lora_" in n for n in trained)  # box-only layers' adapters stay frozen:
    assert not any(f".{module}." in n for n in trained for module in GEOMETRY_BOX_ONLY)
    adapted = build_training_model(
        load_model("tiny"), ModelConfig(name="tiny", finetune=lora), exemplars=True
    )
    assert adapter_counts(adapted.sam3)["geometry"] > 0
    trained = [n for n, p in _geometry(adapted).items() if p.requires_grad]
    assert trained and all("lora_" in n for n in trained)


def test_exemplar_inputs_are_checked(tiny, batch):
    model = build_training_model(tiny, ModelConfig(name="tiny"), exemplars=True).eval()
    with pytest.raises(ValueError, match="together"):
        model(*batch, exemplar_boxes=BOXES)
    with pytest.raises(ValueError, match="exemplar_boxes"):
        model(*batch, exemplar_boxes=BOXES[:2], exemplar_labels=LABELS[:2])
