"""SAM 3 for training: loading, the training forward (aux layers, DAC, shared image encoding),
fine-tuning modes (freezing, LoRA), activation checkpointing, export. See docs/model.md."""

# first: outside the tested transformers range, fail with the versions named (not deep inside an import)
from sam3tune.model.transformers_version import check_transformers_version

check_transformers_version()

from sam3tune.model.architectures import NAMED_ARCHITECTURES, ArchitectureSpec
from sam3tune.model.clip_tokenizer import ClipTokenizer
from sam3tune.model.components import (
    ComponentParameters,
    component_of,
    format_parameter_table,
    parameter_table,
    vit_depth,
)
from sam3tune.model.config import COMPONENTS, FinetuneConfig, LoraConfig, ModelConfig
from sam3tune.model.export import load_adapters, save_adapters, save_merged
from sam3tune.model.loading import LoadReport, ModelBundle, WeightsNotLoadedError, load_model
from sam3tune.model.tokenizer import HashingTokenizer, PretrainedTokenizer, Tokenizer
from sam3tune.model.training_model import Sam3ForTraining, build_training_model

__all__ = [
    "COMPONENTS",
    "NAMED_ARCHITECTURES",
    "ArchitectureSpec",
    "ClipTokenizer",
    "ComponentParameters",
    "FinetuneConfig",
    "HashingTokenizer",
    "LoadReport",
    "LoraConfig",
    "ModelBundle",
    "ModelConfig",
    "PretrainedTokenizer",
    "Sam3ForTraining",
    "Tokenizer",
    "WeightsNotLoadedError",
    "build_training_model",
    "component_of",
    "format_parameter_table",
    "load_adapters",
    "load_model",
    "parameter_table",
    "save_adapters",
    "save_merged",
    "vit_depth",
]
