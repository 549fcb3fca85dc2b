import pytest
import torch

from sam3tune.model import ModelConfig, build_training_model
from tests.model.conftest import assert_equals_hf, padding_box, total_of


def _no_dropout(**kwargs):
    return ModelConfig(name="tiny", detr_dropout=0.0, **kwargs)


@pytest.mark.parametrize("mode", ["meta", "hf"])
def test_eval_outputs_equal_hf_forward(tiny, batch, mode):
    """``meta`` mode equals plain HF given one padding box (its CLS token joins the prompt), ``hf`` mode
    equals plain HF as it is; the two differ by far more than rounding."""
    pixel_values, image_index, input_ids, attention_mask = batch
    model = build_training_model(tiny, ModelConfig(name="tiny", prompt_token=mode)).eval()
    assert model.prompt_token == mode
    extra = padding_box(4) if mode == "meta" else {}
    with torch.no_grad():
        ours = model(pixel_values, image_index, input_ids, attention_mask)
        # one row per query, as HF takes it
        unshared = model(pixel_values[image_index], torch.arange(4), input_ids, attention_mask)
        hf = tiny.model(
            pixel_values=pixel_values[image_index],
            input_ids=input_ids,
            attention_mask=attention_mask,
            **extra,
        )
        other = tiny.model(
            pixel_values=pixel_values[image_index],
            input_ids=input_ids,
            attention_mask=attention_mask,
            **(padding_box(4) if mode == "hf" else {}),
        )
    for out in (ours, unshared):
        assert_equals_hf(out, hf)
        assert not any(k.endswith("_o2m") for k in out)
    assert float((ours["pred_logits"] - other.pred_logits).abs().max()) > 1e-3


def test_meta_mode_is_the_default_and_hf_mode_runs_no_geometry_encoder(tiny, batch):
    model = build_training_model(tiny, ModelConfig(name="tiny")).eval()
    assert model.prompt_token == "meta"
    calls = []
    for layer in tiny.model.geometry_encoder.layers:
        layer.register_forward_hook(lambda m, args, out: calls.append(out.shape))
    with torch.no_grad():
        model(*batch)
        width = tiny.model.config.geometry_encoder_config.hidden_size
        assert calls == [(2, 1, width)]  # the CLS token once per image (2 images, 4 queries), 1 layer
        calls.clear()
        build_training_model(tiny, ModelConfig(name="tiny", prompt_token="hf")).eval()(*batch)
    assert calls == []


def test_training_output_format(tiny, batch):
    model = build_training_model(tiny, ModelConfig(name="tiny")).train()
    out = model(*batch)
    q, b, side = model.num_queries, 4, 4 * tiny.image_size // 8
    assert out["pred_logits"].shape == out["pred_logits_o2m"].shape == (b, q)
    assert out["pred_boxes"].shape == out["pred_boxes_o2m"].shape == (b, q, 4)
    assert out["presence_logits"].shape == (b, 1)
    assert out["pred_masks"].shape == out["pred_masks_o2m"].shape == (b, q, side, side)
    assert len(out["aux_outputs"]) == tiny.model.config.detr_decoder_config.num_layers - 1
    for aux in out["aux_outputs"]:
        assert set(aux) == {
            "pred_logits",
            "pred_boxes",
            "presence_logits",
            "pred_logits_o2m",
            "pred_boxes_o2m",
        }
    assert all(out[k].dtype == torch.float32 for k in ("pred_logits", "pred_boxes", "presence_logits"))
    boxes = out["pred_boxes"].detach()
    assert float(boxes.min()) >= 0 and float(boxes.max()) <= 1


def test_every_trainable_parameter_gets_a_gradient(tiny, batch):
    """So DDP runs without find_unused_parameters."""
    model = build_training_model(tiny, ModelConfig(name="tiny")).train()
    total_of(model(*batch)).backward()
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert len(trainable) > 100
    assert [n for n in trainable if model.get_parameter(n).grad is None] == []


def test_presence_logits_are_unclamped_and_differentiable(tiny, batch):
    model = build_training_model(tiny, _no_dropout()).train()
    head = tiny.model.detr_decoder.presence_head.layer3
    with torch.no_grad():
        head.bias.fill_(25.0)
    out = model(*batch)
    assert float(out["presence_logits"].detach().min()) > 10.0
    out["presence_logits"].sum().backward()
    assert float(head.bias.grad.abs().sum()) > 0
    # HF's own forward clamps at +-10 and blocks the gradient there
    head.bias.grad = None
    hf = tiny.model(pixel_values=batch[0][batch[1]], input_ids=batch[2], attention_mask=batch[3])
    assert float(hf.presence_logits.detach().max()) == 10.0
    hf.presence_logits.sum().backward()
    assert float(head.bias.grad.abs().sum()) == 0.0


def test_one_to_one_results_unchanged_by_one_to_many_branch(tiny, batch):
    model = build_training_model(tiny, _no_dropout()).train()
    with_dac = model(*batch)
    model.one_to_many = False
    without = model(*batch)
    assert "pred_logits_o2m" not in without
    for key in ("pred_logits", "pred_boxes", "presence_logits", "pred_masks"):
        torch.testing.assert_close(with_dac[key], without[key], rtol=0, atol=1e-6)
    for a, b in zip(with_dac["aux_outputs"], without["aux_outputs"], strict=True):
        for key in ("pred_logits", "pred_boxes", "presence_logits"):
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)
    # the duplicates are a different branch, not a copy
    assert (with_dac["pred_logits_o2m"] - with_dac["pred_logits"]).abs().max() > 1e-3


def test_one_to_many_queries_skip_self_attention(tiny, batch):
    """Perturbing query 0 moves every one-to-one query (they attend to each other) but only query 0 of
    the one-to-many copy (its queries never attend to each other).

    The perturbation is a zero-mean random direction: a uniform shift (+1 on every component) is removed
    by the LayerNorm the decoder applies first, so it would move nothing beyond rounding."""
    model = build_training_model(tiny, _no_dropout()).train()
    before = model(*batch)
    weight = tiny.model.detr_decoder.query_embed.weight
    direction = torch.randn(weight.shape[1], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        weight[0] += direction - direction.mean()
    after = model(*batch)
    o2o = (after["pred_logits"] - before["pred_logits"]).detach().abs()
    o2m = (after["pred_logits_o2m"] - before["pred_logits_o2m"]).detach().abs()
    # this random tiny model's logits are ~1e-2, so their float32 rounding is ~1e-9: every bound below
    # sits orders of magnitude away from it
    moved = float(o2m[:, 0].min())
    assert float(o2o[:, 1:].min()) > 1e-6
    assert moved > 1e-5
    assert float(o2m[:, 1:].max()) <= 1e-3 * moved


def test_each_unique_image_is_encoded_once(tiny, batch):
    model = build_training_model(tiny, _no_dropout()).train()
    seen = []
    handle = tiny.model.vision_encoder.register_forward_hook(
        lambda m, args, out: seen.append(args[0].shape[0])
    )
    shared = model(*batch)
    handle.remove()
    assert seen == [2]  # 2 images, 4 queries
    # same predictions and gradients as encoding one image row per query
    total_of(shared).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    pixel_values, image_index, input_ids, attention_mask = batch
    repeated = model(pixel_values[image_index], torch.arange(4), input_ids, attention_mask)
    torch.testing.assert_close(shared["pred_masks"], repeated["pred_masks"], rtol=0, atol=1e-5)
    total_of(repeated).backward()
    for name, grad in grads.items():
        # float32 sums in another order (2 image rows instead of 4): the bound scales with the tensor's
        # largest gradient, since an element near 0 can be a cancellation of large terms (a bias of the
        # last FPN level: 1.1e-5 apart on gradients up to 22, measured with transformers 5.9.0)
        atol = 1e-6 + 1e-5 * float(grad.abs().max())
        torch.testing.assert_close(grad, model.get_parameter(name).grad, rtol=1e-4, atol=atol, msg=name)


def test_pixel_gradient_reaches_shared_images(tiny, batch):
    model = build_training_model(tiny, _no_dropout()).train()
    pixel_values = batch[0].clone().requires_grad_(True)
    model(pixel_values, *batch[1:])["pred_logits"].sum().backward()
    assert float(pixel_values.grad[0].abs().sum()) > 0 and float(pixel_values.grad[1].abs().sum()) > 0


def test_frozen_encoders_run_without_graph(tiny, batch):
    from sam3tune.model import FinetuneConfig

    config = ModelConfig(name="tiny", finetune=FinetuneConfig(freeze=["vision", "text"]))
    model = build_training_model(tiny, config).train()
    seen = []
    handle = tiny.model.vision_encoder.register_forward_hook(
        lambda m, args, out: seen.append(out.fpn_hidden_states[0].requires_grad)
    )
    total_of(model(*batch)).backward()
    handle.remove()
    assert seen == [False]
    assert tiny.model.detr_encoder.layers[0].mlp.fc1.weight.grad is not None


def test_bf16_autocast_forward_backward(tiny, batch):
    model = build_training_model(tiny, ModelConfig(name="tiny")).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(*batch)
    assert out["pred_logits"].dtype == out["pred_boxes"].dtype == torch.float32
    total_of(out).backward()
    assert torch.isfinite(tiny.model.detr_decoder.query_embed.weight.grad).all()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda px, ix, ids, am: (px[:, :, :32], ix, ids, am), "pixel_values must be"),
        (lambda px, ix, ids, am: (px, ix[:3], ids, am), "image_index must be"),
        (lambda px, ix, ids, am: (px, ix + 1, ids, am), r"lie in \[0, 2\)"),
        (lambda px, ix, ids, am: (px, ix.int(), ids, am), "int64"),
        (lambda px, ix, ids, am: (px, ix, ids, am[:, :2]), "attention_mask"),
    ],
)
def test_bad_inputs_are_rejected_clearly(tiny, batch, change, message):
    model = build_training_model(tiny, ModelConfig(name="tiny"))
    with pytest.raises(ValueError, match=message):
        model(*change(*batch))


def test_ddp_wraps_without_find_unused_parameters(tiny, batch, tmp_path):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        model = build_training_model(tiny, ModelConfig(name="tiny")).train()
        wrapped = DistributedDataParallel(model, find_unused_parameters=False)
        for _ in range(2):  # DDP reports unused parameters on the step after they were missed
            total_of(wrapped(*batch)).backward()
    finally:
        dist.destroy_process_group()
