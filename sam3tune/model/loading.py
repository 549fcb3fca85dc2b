"""Loading SAM 3: a pretrained checkpoint (hub id or local directory) or a named small architecture.

Pretrained weights load through ``Sam3Model.from_pretrained`` from safetensors only. Every missing,
unexpected or wrongly shaped key is reported, and a model whose weights did not load is refused
(Meta sam3 issue #606: a key-prefix mismatch silently left a random model that then "trained").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from transformers import Sam3Model

from sam3tune.config import load_config
from sam3tune.errors import UserError
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
from sam3tune.model.tokenizer import HashingTokenizer, Tokenizer, load_tokenizer

log = logging.getLogger(__name__)


class WeightsNotLoadedError(UserError, RuntimeError):
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
    stored precision (a half-precision checkpoint is widened). A checkpoint that leaves used weights
    missing or wrongly shaped raises :class:`WeightsNotLoadedError` unless ``allow_missing_weights``.
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
    if not (path / "config.json").is_file():
        raise ModelSpecError(
            f"{path} is not a saved SAM 3 model (no config.json); expected a directory written by "
            f"save_pretrained, a hub id such as facebook/sam3, or one of {architecture_names()}"
        )
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
        message = report.summary()
        if not allow_missing_weights:
            raise WeightsNotLoadedError(
                f"{message}\nRefusing to use a partly random model: the checkpoint lacks weights of the "
                f"{report.missing_by_component() or 'model (wrong shapes)'}, absent or renamed (a key-prefix "
                f"mismatch is the usual cause). Pass allow_missing_weights=True only if this is intended."
            )
        log.warning("%s\nContinuing with randomly initialised weights (allow_missing_weights=True)", message)
    max_length = model.config.text_config.max_position_embeddings
    tokenizer = load_tokenizer(path, max_length=max_length)
    return ModelBundle(model, tokenizer, int(model.config.image_size), source, report)


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
