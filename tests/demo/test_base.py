"""The shipped base model: it loads completely, it is the `demo` architecture, and it is what
scripts/pretrain_demo_base.py writes with the current recipe and task."""

from __future__ import annotations

import torch
from transformers import Sam3Config

from sam3tune.demo.base import base_model_dir, read_provenance
from sam3tune.demo.recipe import PRETRAINING
from sam3tune.demo.tasks import ARCHITECTURE, demo_tokenizer, pretraining_task
from sam3tune.model import NAMED_ARCHITECTURES, load_model
from sam3tune.model.architectures import sam3_config

# dropout is a training setting (the pretraining recipe sets model.detr_dropout=0.0), not architecture
_NOT_ARCHITECTURE = {
    "dtype",
    "torch_dtype",
    "transformers_version",
    "architectures",
    "_name_or_path",
    "dropout",
    "sam3tune_prompt_token",  # how the model runs (checked below), not its architecture
}


def _architecture(config: Sam3Config) -> dict:
    def clean(value):
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items() if k not in _NOT_ARCHITECTURE}
        return value

    return clean(config.to_dict())


def test_shipped_base_loads_every_weight_in_float32():
    directory = base_model_dir()
    bundle = load_model(directory)
    report = bundle.report
    assert report.weights_loaded and report.missing == report.unexpected == report.mismatched == []
    assert {p.dtype for p in bundle.model.parameters()} == {torch.float32}
    stored = (directory / "model.safetensors").stat().st_size
    assert stored < 1.3e6 * 2 + 2**16  # fp16: 2 bytes per parameter plus the header
    assert bundle.image_size == 64


def test_shipped_base_is_the_demo_architecture_made_by_the_current_recipe():
    bundle = load_model(base_model_dir())
    assert _architecture(bundle.model.config) == _architecture(sam3_config(NAMED_ARCHITECTURES[ARCHITECTURE]))
    tokenizer = demo_tokenizer()
    assert (bundle.tokenize.vocab_size, bundle.tokenize.max_length) == (
        tokenizer.vocab_size,
        tokenizer.max_length,
    )
    provenance = read_provenance()
    assert provenance["recipe_overrides"] == list(PRETRAINING)
    task = provenance["task"]
    expected = pretraining_task(
        task["train_images"], task["valid_images"], task["nonsense"], seed=task["seed"]
    )
    assert task["categories"] == expected.category_names()
    # the base runs in the prompt-token mode it was pretrained in (bases pretrained before the mode
    # existed ran HF's forward: no geometry token)
    assert bundle.model.config.sam3tune_prompt_token == provenance.get("prompt_token", "hf")
    final = provenance["validation"][-1]
    assert final["step"] == provenance["steps"] and final["bbox_AP50"] > 0.5  # it learned the seen shapes
