"""Loading SAM 3: a pretrained checkpoint (hub id or local directory) or a named small architecture.

Pretrained weights load through ``Sam3Model.from_pretrained`` from safetensors only. Every missing,
unexpected or wrongly shaped key is reported, and a model whose weights did not load is refused
(Meta sam3 issue #606: a key-prefix mismatch silently left a random model that then "trained").
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import Sam3Model

from sam3tune.config import load_config
from sam3tune.model.architectures import NAMED_ARCHITECTURES, ArchitectureSpec, build_named_model
from sam3tune.model.finetune import unreachable_prefixes
from sam3tune.model.tokenizer import HashingTokenizer, Tokenizer, load_tokenizer

log = logging.getLogger(__name__)

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}")  # owner/name


class WeightsNotLoadedError(RuntimeError):
    """The checkpoint did not provide weights the model needs."""


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

    @property
    def harmful_missing(self) -> list[str]:
        return [k for k in self.missing if k not in self.harmless_missing]

    @property
    def weights_loaded(self) -> bool:
        """True when every weight the training forward uses came from the checkpoint."""
        return not self.harmful_missing and not self.mismatched

    def summary(self, limit: int = 10) -> str:
        def keys(items: list[str]) -> str:
            shown = ", ".join(items[:limit])
            return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")

        lines = [f"weights from {self.source}:"]
        if self.harmful_missing:
            lines.append(
                f"  MISSING (randomly initialised) {len(self.harmful_missing)}: {keys(self.harmful_missing)}"
            )
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
    """Load ``spec``: a named architecture (``tiny``, ``small``, an :class:`ArchitectureSpec`, or a YAML
    file of ``ArchitectureSpec`` fields), a local ``save_pretrained`` directory (with its tokenizer), or a
    hub id such as ``facebook/sam3``.

    Named architectures are built from random weights (``seed``). Pretrained weights must be
    safetensors; they load as ``dtype``, float32 by default whatever the stored precision (a
    half-precision checkpoint is widened). A checkpoint that leaves used weights missing or wrongly
    shaped raises :class:`WeightsNotLoadedError` unless ``allow_missing_weights``.
    """
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


def _load_pretrained(source: str, *, allow_missing_weights: bool, dtype: torch.dtype | None) -> ModelBundle:
    path = Path(source)
    if not path.exists() and not _HUB_ID.fullmatch(source):
        raise FileNotFoundError(
            f"model {source!r}: no such architecture, folder or hub id (named architectures: "
            f"{', '.join(sorted(NAMED_ARCHITECTURES))}; a folder must exist; a hub id reads owner/name, "
            "e.g. facebook/sam3)"
        )
    if path.exists() and not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"{path} is not a saved SAM 3 model (no config.json); expected a directory written by "
            f"save_pretrained, a hub id such as facebook/sam3, or one of {sorted(NAMED_ARCHITECTURES)}"
        )
    # float32 unless asked otherwise: a checkpoint stored in half precision (e.g. the demo base, fp16)
    # must not make training or CPU inference run in it (transformers would keep the stored dtype)
    kwargs = {"use_safetensors": True, "output_loading_info": True, "dtype": dtype or torch.float32}
    if path.exists():
        kwargs["local_files_only"] = True
    model, info = Sam3Model.from_pretrained(source, **kwargs)
    unused = tuple(unreachable_prefixes(model))
    missing = sorted(info.get("missing_keys", []))
    report = LoadReport(
        source=source,
        missing=missing,
        unexpected=sorted(info.get("unexpected_keys", [])),
        mismatched=sorted(str(k) for k in info.get("mismatched_keys", [])),
        harmless_missing=[k for k in missing if k.startswith(unused)],
    )
    log.info("%s", report.summary())
    if not report.weights_loaded:
        message = report.summary()
        if not allow_missing_weights:
            raise WeightsNotLoadedError(
                f"{message}\nRefusing to use a partly random model (a key-prefix mismatch in the checkpoint "
                f"is the usual cause). Pass allow_missing_weights=True only if this is intended."
            )
        log.warning("%s\nContinuing with randomly initialised weights (allow_missing_weights=True)", message)
    max_length = model.config.text_config.max_position_embeddings
    tokenizer = load_tokenizer(source, max_length=max_length)
    return ModelBundle(model, tokenizer, int(model.config.image_size), source, report)
