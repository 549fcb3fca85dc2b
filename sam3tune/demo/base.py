"""The demo's base model: a ``demo``-architecture SAM 3 pretrained on seen shapes, shipped with the
package in ``sam3tune/demo/base`` (``save_pretrained`` layout, fp16 safetensors, hashing tokenizer,
``pretraining.json`` saying how it was made). ``scripts/pretrain_demo_base.py`` writes it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sam3tune.atomic import atomic_directory
from sam3tune.model import load_model
from sam3tune.model.hub import ModelSpecError

BASE_DIR = Path(__file__).with_name("base")
PROVENANCE_FILE = "pretraining.json"


def base_model_dir() -> Path:
    """The shipped base model's directory; ``ModelSpecError`` (with the remedy) when it is absent."""
    if not (BASE_DIR / "config.json").is_file():
        raise ModelSpecError(
            f"the demo base model is missing from {BASE_DIR}; remake it with "
            "`python scripts/pretrain_demo_base.py` (about an hour on one CPU core, docs/demo.md)"
        )
    return BASE_DIR


def export_base(model_dir: Path, target: Path, provenance: dict[str, Any]) -> Path:
    """Write the model in ``model_dir`` (a ``save_pretrained`` directory) to ``target`` in fp16, with its
    tokenizer and ``provenance`` as ``pretraining.json``; atomic (``target`` is replaced at the end)."""
    bundle = load_model(model_dir)
    with atomic_directory(target) as staging:
        bundle.model.half().save_pretrained(staging)
        bundle.tokenize.save(staging)
        (staging / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n")
    return target


def read_provenance(directory: Path = BASE_DIR) -> dict[str, Any]:
    """The ``pretraining.json`` of a base model directory."""
    return json.loads((directory / PROVENANCE_FILE).read_text())
