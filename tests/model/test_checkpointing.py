import torch

from sam3tune.model import FinetuneConfig, LoraConfig, ModelConfig, build_training_model, load_model
from tests.model.conftest import total_of


def _saved_bytes_and_grads(model, batch):
    saved = []

    def pack(tensor):
        saved.append(tensor.numel() * tensor.element_size())
        return tensor

    torch.manual_seed(123)  # the same dropout masks with and without checkpointing
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        total = total_of(model(*batch))
    total.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return sum(saved), grads


def _compare(config, batch):
    model = build_training_model(load_model("tiny"), config).train()
    assert model.activation_checkpointing is False
    plain_bytes, plain = _saved_bytes_and_grads(model, batch)
    model.activation_checkpointing = True
    checkpointed_bytes, checkpointed = _saved_bytes_and_grads(model, batch)
    assert set(plain) == set(checkpointed) and len(plain) > 50
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, rtol=1e-5, atol=1e-7, msg=name)
    return plain_bytes, checkpointed_bytes


def test_checkpointing_gives_equal_gradients_with_dropout_and_one_to_many(batch):
    plain_bytes, checkpointed_bytes = _compare(ModelConfig(name="tiny"), batch)
    assert checkpointed_bytes < 0.6 * plain_bytes


def test_checkpointing_covers_vit_clip_and_detr_layers(batch):
    model = build_training_model(load_model("tiny"), ModelConfig(name="tiny", activation_checkpointing=True))
    core = model.core
    layers = list(core.vision_encoder.backbone.layers) + list(core.text_encoder.text_model.encoder.layers)
    assert all(layer.gradient_checkpointing for layer in layers)
    # count recomputations, watching a module early in each checkpointed region (the recomputation stops
    # once it has rebuilt what backward needs, before a region's last module)
    calls = []
    hooks = [
        m.register_forward_hook(lambda *a, name=name: calls.append(name))
        for name, m in (
            ("vit", core.vision_encoder.backbone.layers[0].attention),
            ("clip", core.text_encoder.text_model.encoder.layers[0].self_attn),
            ("encoder", core.detr_encoder.layers[0].self_attn),
            ("decoder", core.detr_decoder.layers[0].self_attn),
            ("mask", core.mask_decoder.prompt_cross_attn),
        )
    ]
    total_of(model.train()(*batch)).backward()
    for hook in hooks:
        hook.remove()
    assert sorted(calls) == sorted(["vit", "clip", "encoder", "decoder", "mask"] * 2)  # forward + recompute


def test_checkpointing_with_lora_gives_equal_gradients(batch):
    lora = FinetuneConfig(mode="lora", lora=LoraConfig(components=["vision", "text", "detr_decoder"]))
    _compare(ModelConfig(name="tiny", finetune=lora), batch)
