"""Model and optimiser failure modes: LoRA without adapters, nothing trainable, learning rates."""

from sam3tune.doctor.diagnosis import diagnose
from tests.doctor.conftest import run_config


def test_lora_component_without_adapters(shapes):
    report = diagnose(
        run_config(
            shapes,
            "model.finetune.mode=lora",
            "model.finetune.lora.components=[vision, text]",
            r"model.finetune.lora.target_modules={text: 'text_encoder\.no_such_layer'}",
        )
    )
    assert report.codes() == {"lora_component_without_adapters"}
    assert "'text'" in report.flags[0].message and report.exit_status == 1
    assert report.losses is None  # the trainer would refuse to build this model


def test_healthy_lora_trains_adapters_and_heads(shapes):
    report = diagnose(run_config(shapes, "model.finetune.mode=lora"))
    assert report.flags == []
    rows = {r.component: r for r in report.parameters}
    assert rows["vision"].adapters > 0 and rows["vision"].trainable == rows["vision"].adapters
    assert {g.name.split(".")[0] for g in report.learning_rates} == {"lora", "transformer"}


def test_every_parameter_frozen(shapes):
    components = "[vision, text, geometry, detr_encoder, detr_decoder, mask_decoder, heads]"
    report = diagnose(run_config(shapes, f"model.finetune.freeze={components}"))
    assert "all_parameters_frozen" in report.codes("error")
    assert report.learning_rates is None and report.memory is None
    assert report.losses is not None  # the forward still runs: the loss table is shown


def test_learning_rates_far_from_the_recipe(shapes):
    warning = diagnose(run_config(shapes, "optim.lr_transformer=3e-4"))  # 3.75x
    (flag,) = warning.flags
    assert (flag.code, flag.severity) == ("learning_rate_far_from_recipe", "warning")
    assert all(d.startswith("transformer") for d in flag.details)

    error = diagnose(run_config(shapes, "optim.lr_vision=2.5e-3"))  # 100x
    (flag,) = error.flags
    assert (flag.code, flag.severity) == ("learning_rate_far_from_recipe", "error")
    assert len(flag.details) == sum(g.name.startswith("vision") for g in error.learning_rates)

    decay = diagnose(run_config(shapes, "optim.vision_layer_decay=0.2"))  # 2 blocks: stem at 0.2^3 vs 0.9^3
    (flag,) = decay.flags
    assert flag.code == "learning_rate_far_from_recipe" and "vision.stem" in flag.message


def test_other_optimiser_settings_are_a_note(shapes):
    report = diagnose(run_config(shapes, "optim.grad_clip_norm=1.0", "optim.weight_decay=0.05"))
    (flag,) = report.flags
    assert (flag.code, flag.severity) == ("optimiser_differs_from_recipe", "info")
    assert set(flag.details) == {
        "optim.weight_decay: 0.05 (recipe: 0.1)",
        "optim.grad_clip_norm: 1.0 (recipe: 0.1)",
    }
    assert report.exit_status == 0


def test_mask_decoder_without_mask_targets_gets_no_gradient(shapes):
    report = diagnose(run_config(shapes, "data.masks=false"))
    (flag,) = report.flags
    assert flag.code == "trainable_without_gradient" and "(mask_decoder: 26, vision: 14)" in flag.message
    # The FPN levels the DETR does not read feed only the mask decoder.
    assert all(".mask_decoder." in name or ".neck.fpn_layers." in name for name in flag.details)
