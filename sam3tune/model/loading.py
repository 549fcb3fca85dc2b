"""Loading SAM 3: a pretrained checkpoint (hub id or local directory) or a named small architecture.

Pretrained weights load through ``Sam3Model.from_pretrained`` from safetensors only. Every missing,
unexpected or wrongly shaped key is reported, and a model whose weights did not load is refused
(Meta sam3 issue #606: a key-prefix mismatch silently left a random model that then "trained").
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from huggingface_hub.errors import StrictDataclassError
from safetensors import SafetensorError, safe_open
from transformers import Sam3Config, Sam3Model

from sam3tune.config import load_config
from sam3tune.model.architectures import (
    NAMED_ARCHITECTURES,
    SAM3_RANDOM,
    ArchitectureSpec,
    architecture_names,
    build_named_model,
    build_sam3_random,
)
from sam3tune.model.clip_tokenizer import ClipTokenizer
from sam3tune.model.components import component_of
from sam3tune.model.finetune import unreachable_prefixes
from sam3tune.model.hub import ModelSpecError, check_spec, hub_folder
from sam3tune.model.prompt_token import (
    DEFAULT_MODE,
    MODES,
    RECORD_KEY,
    recorded_prompt_token,
    set_prompt_token,
)
from sam3tune.model.tokenizer import HashingTokenizer, Tokenizer, load_tokenizer
from sam3tune.run_dir import RunDir

log = logging.getLogger(__name__)


class WeightsNotLoadedError(ModelSpecError, RuntimeError):
    """The checkpoint did not provide weights the model needs."""


#: components (``sam3tune.model.config.COMPONENTS``) as the messages name them
COMPONENT_LABELS = {
    "vision": "vision encoder (ViT + FPN)",
    "text": "text encoder (CLIP)",
    "geometry": "geometry encoder",
    "detr_encoder": "DETR encoder",
    "detr_decoder": "DETR decoder",
    "mask_decoder": "mask decoder",
    "heads": "heads (box, presence, scoring)",
}


def _component_or_other(key: str) -> str:
    try:
        return component_of(key)
    except KeyError:
        return "other"


@dataclass(frozen=True)
class LoadReport:
    """What ``from_pretrained`` did with the checkpoint's keys (empty lists for a named architecture).

    ``missing`` keys were absent from the checkpoint and left randomly initialised; ``harmless_missing``
    is the part of them that training never uses (see ``finetune.unreachable_prefixes``).
    """

    source: str
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    harmless_missing: list[str] = field(default_factory=list)
    #: weights the model expects per component (to say "all of the text encoder" vs a few keys)
    expected: dict[str, int] = field(default_factory=dict)

    @property
    def harmful_missing(self) -> list[str]:
        return [k for k in self.missing if k not in self.harmless_missing]

    @property
    def weights_loaded(self) -> bool:
        """True when every weight the training forward uses came from the checkpoint."""
        return not self.harmful_missing and not self.mismatched

    def missing_by_component(self) -> str:
        """``"text: 196 of 196 weights, vision: 2 of 460 weights"`` over the harmful missing keys."""
        counts: dict[str, int] = {}
        for key in self.harmful_missing:
            counts[_component_or_other(key)] = counts.get(_component_or_other(key), 0) + 1
        return ", ".join(
            f"{COMPONENT_LABELS.get(c, c)}: {n} of {self.expected.get(c, n)} weights"
            for c, n in counts.items()
        )

    def summary(self, limit: int = 10) -> str:
        def keys(items: list[str]) -> str:
            shown = ", ".join(items[:limit])
            return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")

        lines = [f"weights from {self.source}:"]
        if self.harmful_missing:
            lines.append(f"  MISSING (randomly initialised) {self.missing_by_component()}")
            lines.append(f"    keys {len(self.harmful_missing)}: {keys(self.harmful_missing)}")
        if self.mismatched:
            lines.append(f"  WRONG SHAPE {len(self.mismatched)}: {keys(self.mismatched)}")
        if self.harmless_missing:
            lines.append(
                f"  missing but unused in training {len(self.harmless_missing)}: "
                f"{keys(self.harmless_missing)}"
            )
        if self.unexpected:
            lines.append(f"  unexpected (ignored) {len(self.unexpected)}: {keys(self.unexpected)}")
        if len(lines) == 1:
            lines.append("  all keys matched")
        return "\n".join(lines)


@dataclass
class ModelBundle:
    """A loaded SAM 3 with what the rest of sam3tune needs next to it.

    ``tokenize(texts) -> (input_ids (B, L) int64, attention_mask (B, L) int64)`` goes to the data collate;
    ``image_size`` is the square side S of ``pixel_values`` the model takes.
    """

    model: Sam3Model
    tokenize: Tokenizer
    image_size: int
    source: str
    report: LoadReport


def load_model(
    spec: str | Path | ArchitectureSpec,
    *,
    allow_missing_weights: bool = False,
    dtype: torch.dtype | None = None,
    seed: int = 0,
) -> ModelBundle:
    """Load ``spec``: a named architecture (``tiny``, ``small``, ``demo``, an :class:`ArchitectureSpec`, or a
    YAML file of ``ArchitectureSpec`` fields), ``sam3-random`` (the released architecture, untrained), a
    local ``save_pretrained`` directory (with its tokenizer), or a hub id such as ``facebook/sam3``.

    Named architectures are built from random weights (``seed``); ``sam3-random`` needs CLIP's BPE file
    on this machine (``ClipTokenizer.find_local``) and raises ``FileNotFoundError`` saying how to get it.
    Pretrained weights must be safetensors; they load as ``dtype``, float32 by default whatever the
    stored precision (a half-precision checkpoint is widened). The model runs in the prompt-token mode its
    ``config.json`` records, ``meta`` when it records none (``sam3tune.model.prompt_token``). A
    checkpoint that leaves used weights missing or wrongly shaped raises :class:`WeightsNotLoadedError`
    unless ``allow_missing_weights``.
    """
    if str(spec) == SAM3_RANDOM:
        return _load_sam3_random(seed, dtype)
    if str(spec).endswith((".yaml", ".yml")):
        spec, name = load_config(ArchitectureSpec, spec), f"architecture file {spec}"
    else:
        name = "custom architecture" if isinstance(spec, ArchitectureSpec) else f"named architecture {spec!r}"
    if isinstance(spec, ArchitectureSpec) or str(spec) in NAMED_ARCHITECTURES:
        arch = spec if isinstance(spec, ArchitectureSpec) else NAMED_ARCHITECTURES[str(spec)]
        model = build_named_model(arch, seed=seed)
        if dtype is not None:
            model = model.to(dtype)
        tokenizer = HashingTokenizer(arch.text_vocab_size, arch.text_max_length)
        return ModelBundle(model, tokenizer, arch.image_size, name, LoadReport(source=name))
    return _load_pretrained(str(spec), allow_missing_weights=allow_missing_weights, dtype=dtype)


def _load_sam3_random(seed: int, dtype: torch.dtype | None) -> ModelBundle:
    tokenizer = ClipTokenizer.find_local()  # before the 840M build: a missing file fails at once
    source = f"{SAM3_RANDOM} (released SAM 3 architecture, random weights: UNTRAINED)"
    log.warning("building %s; it predicts nothing useful until trained", source)
    model = build_sam3_random(seed)
    if dtype is not None:
        model = model.to(dtype)
    return ModelBundle(model, tokenizer, int(model.config.image_size), source, LoadReport(source=source))


def _load_pretrained(source: str, *, allow_missing_weights: bool, dtype: torch.dtype | None) -> ModelBundle:
    check_spec(source, architecture_names())
    path = Path(source)
    if not path.exists():
        path = hub_folder(source)
    config = read_model_config(path)
    stored = _stored_tensors(path)
    early = _header_report(source, config, stored)  # from the files' headers: nothing allocated yet
    if not early.weights_loaded and not allow_missing_weights:
        raise WeightsNotLoadedError(_not_loaded_message(early))
    # float32 unless asked otherwise: a checkpoint stored in half precision (e.g. the demo base, fp16)
    # must not make training or CPU inference run in it (transformers would keep the stored dtype)
    try:
        model, info = Sam3Model.from_pretrained(
            str(path),
            use_safetensors=True,
            output_loading_info=True,
            dtype=dtype or torch.float32,
            local_files_only=True,
        )
    except SafetensorError as err:
        raise ModelSpecError(
            f"weights file {_unreadable_weights(path) or path} is truncated or corrupt ({err}); save or "
            "download the model again"
        ) from err
    mode = recorded_prompt_token(model.config)
    if mode is None:
        log.info(
            "%s records no prompt-token mode: running it as Meta's SAM 3 was trained (%s=%s, docs/model.md)",
            source,
            RECORD_KEY,
            DEFAULT_MODE,
        )
    set_prompt_token(model, DEFAULT_MODE if mode is None else mode)
    unused = tuple(unreachable_prefixes(model))
    missing = sorted(info.get("missing_keys", []))
    report = LoadReport(
        source=source,
        missing=missing,
        unexpected=sorted(info.get("unexpected_keys", [])),
        mismatched=sorted(str(k) for k in info.get("mismatched_keys", [])),
        harmless_missing=[k for k in missing if k.startswith(unused)],
        expected=_count_components(model.state_dict()),
    )
    log.info("%s", report.summary())
    if not report.weights_loaded:
        if not allow_missing_weights:
            raise WeightsNotLoadedError(_not_loaded_message(report))
        log.warning(
            "%s\nContinuing with randomly initialised weights (allow_missing_weights=True)", report.summary()
        )
    max_length = model.config.text_config.max_position_embeddings
    tokenizer = load_tokenizer(path, max_length=max_length)
    return ModelBundle(model, tokenizer, int(model.config.image_size), source, report)


def _not_loaded_message(report: LoadReport) -> str:
    return (
        f"{report.summary()}\nRefusing to use a partly random model: the checkpoint lacks weights of the "
        f"{report.missing_by_component() or 'model (wrong shapes)'}, absent or renamed (a key-prefix "
        f"mismatch is the usual cause). Pass allow_missing_weights=True only if this is intended."
    )


#: largest config.json read (the released SAM 3's is ~10 KB)
MAX_CONFIG_BYTES = 4 << 20
_PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "model.pt", "model.pth", "model.ckpt")


def read_model_config(path: Path) -> Sam3Config:
    """The ``Sam3Config`` of the model folder ``path``, checked: ``config.json`` present, at most
    :data:`MAX_CONFIG_BYTES`, JSON, of model type ``sam3``, accepted by ``Sam3Config``. Other folders a user
    may pass (a training run, an ONNX export, LoRA adapters) are named for what they are."""
    file = path / "config.json"
    if not file.is_file():
        raise ModelSpecError(f"{path} is not a saved SAM 3 model (no config.json); {_what_folder(path)}")
    size = file.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise ModelSpecError(f"{file}: {size:,} bytes, too big for a model configuration")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, RecursionError, json.JSONDecodeError) as err:
        raise ModelSpecError(f"{file}: not readable JSON, truncated or corrupt ({err})") from err
    if not isinstance(data, dict):
        raise ModelSpecError(f"{file}: expected a JSON object, got {type(data).__name__}")
    if data.get("model_type") == _VIDEO_MODEL_TYPE and isinstance(data.get("detector_config"), dict):
        data = data["detector_config"]  # the hub's facebook/sam3: a video config whose detector is SAM 3
    if data.get("model_type", Sam3Config.model_type) != Sam3Config.model_type:
        raise ModelSpecError(
            f"{file}: model_type {data.get('model_type')!r}, not a SAM 3 model ({Sam3Config.model_type!r}); "
            "give the folder of a Sam3Model (save_pretrained, sam3tune import-checkpoint, RUN_DIR/model)"
        )
    try:
        config = Sam3Config.from_dict(data)
        layers = _layer_count(config.to_dict())
    except (TypeError, ValueError, KeyError, AttributeError, StrictDataclassError) as err:
        problem = f"{type(err).__name__}: {err}"
        raise ModelSpecError(f"{file}: not a valid SAM 3 configuration ({problem})") from err
    if layers > _MAX_LAYERS:
        raise ModelSpecError(f"{file}: {layers:,} layers in all, beyond any SAM 3 (the released one has 62)")
    mode = recorded_prompt_token(config)
    if mode is not None and mode not in MODES:
        raise ModelSpecError(f"{file}: {RECORD_KEY} must be one of {list(MODES)}, got {mode!r}", path=file)
    return config


_MAX_LAYERS = 10_000
_VIDEO_MODEL_TYPE = "sam3_video"


def _layer_count(config: dict) -> int:
    """Every ``num_*layers*`` count of a nested config dict, summed (what building the model iterates)."""
    total = 0
    for key, value in config.items():
        if isinstance(value, dict):
            total += _layer_count(value)
        elif isinstance(key, str) and key.startswith("num_") and "layers" in key:
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{key}={value!r} must be a count")
            total += value
    return total


def _what_folder(path: Path) -> str:
    """What ``path`` (a folder without ``config.json``) is, and what to give instead."""
    if (path / "export.json").is_file():
        return (
            "it is an ONNX export (export.json): onnxruntime runs it in `sam3tune predict` and `eval` (text "
            "prompts); training, box prompts, the semantic head and exporting need the PyTorch model it was "
            "exported from (export.json's source)"
        )
    run = RunDir(path)
    if run.is_run() and (run.model_dir / "config.json").is_file():
        return f"it is a training run: its model is {run.model_dir}"
    if (path / "adapter_config.json").is_file():
        return (
            "it holds LoRA adapters (adapter_config.json): load the merged model beside them (RUN_DIR/model)"
        )
    return (
        f"expected a directory written by save_pretrained, a hub id such as facebook/sam3, or one of "
        f"{architecture_names()}"
    )


def _stored_tensors(path: Path) -> dict[str, tuple[list[int], str, Path]]:
    """Name -> (shape, dtype, file) of every tensor in the folder's safetensors weights, read from the
    headers only (their offsets are checked against the file size by safetensors)."""
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            files = sorted({path / name for name in weight_map.values()})
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:  # ValueError: bad JSON
            raise ModelSpecError(f"{index}: not a safetensors index ({err})") from err
        outside = [f for f in files if f.parent != path]
        if outside:
            raise ModelSpecError(f"{index}: names weights outside {path}: {outside[0]}")
    elif (path / "model.safetensors").is_file():
        files = [path / "model.safetensors"]
    else:
        pickles = [name for name in _PICKLE_WEIGHTS if (path / name).exists()]
        if pickles:
            raise ModelSpecError(
                f"{path} holds {', '.join(pickles)} and no model.safetensors: sam3tune loads safetensors "
                "weights only (loading a pickle can run code). Where you trust the file, convert it: "
                "Sam3Model.from_pretrained(DIR, use_safetensors=False).save_pretrained(NEW_DIR)"
            )
        raise ModelSpecError(f"{path} has a config.json but no weights (model.safetensors)")
    stored: dict[str, tuple[list[int], str, Path]] = {}
    for file in files:
        if not file.is_file():
            raise ModelSpecError(f"weights file {file} is missing (named by {index.name})")
        try:
            with safe_open(str(file), framework="pt") as handle:
                for key in handle.keys():  # noqa: SIM118 (a safe_open handle is no dict)
                    piece = handle.get_slice(key)
                    stored[key] = (list(piece.get_shape()), piece.get_dtype(), file)
        except (SafetensorError, OSError) as err:
            raise ModelSpecError(
                f"weights file {file} is truncated or corrupt ({err}); save or download the model again"
            ) from err
    return stored


def _header_report(source: str, config: Sam3Config, stored: dict) -> LoadReport:
    """The :class:`LoadReport` ``from_pretrained`` would give, from the config and the files' headers
    (the model built on the meta device: no memory)."""
    if _layer_count(config.to_dict()) > len(stored):
        raise ModelSpecError(
            f"{source}: config.json describes {_layer_count(config.to_dict()):,} layers but the weights hold "
            f"{len(stored):,} tensors: config.json and the weights are of different models"
        )
    with torch.device("meta"):
        model = Sam3Model(config)
    prefix = f"{Sam3Model.base_model_prefix}."  # the hub's layout: detector_model.* beside tracker_*
    if any(key.startswith(prefix) for key in stored):
        stored = {key.removeprefix(prefix) if key.startswith(prefix) else key: v for key, v in stored.items()}
    expected = {k: list(v.shape) for k, v in model.state_dict().items()}
    unused = tuple(unreachable_prefixes(model))
    missing = sorted(set(expected) - set(stored))
    return LoadReport(
        source=source,
        missing=missing,
        unexpected=sorted(set(stored) - set(expected)),
        mismatched=sorted(
            f"{k}: stored {stored[k][0]}, config {expected[k]}"
            for k in set(expected) & set(stored)
            if stored[k][0] != expected[k]
        ),
        harmless_missing=[k for k in missing if k.startswith(unused)],
        expected=_count_components(expected),
    )


def _count_components(keys) -> dict[str, int]:
    counts: dict[str, int] = {}
    for key in keys:
        component = _component_or_other(key)
        counts[component] = counts.get(component, 0) + 1
    return counts


def _unreadable_weights(folder: Path) -> Path | None:
    """The first ``*.safetensors`` file of ``folder`` whose header cannot be read, if any."""
    for path in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(path), framework="pt"):
                pass
        except SafetensorError:
            return path
    return None
