"""Prompt tokenizers: ``tokenize(texts) -> (input_ids (B, L) int64, attention_mask (B, L) int64)``.

Batches are right-padded to their longest prompt (at most ``max_length`` tokens, the CLIP context of 32
for the real model). SAM 3 masks padding everywhere (causal CLIP, masked cross-attention and pooling),
so padding to the longest prompt instead of always to 32 changes no result and saves text-encoder work.

* :class:`~sam3tune.model.clip_tokenizer.ClipTokenizer` is SAM 3's CLIP BPE with Meta's text cleaning,
  used for every model folder that holds a CLIP vocabulary (``facebook/sam3``, ``sam3-random``).
* :class:`PretrainedTokenizer` wraps any other Hugging Face tokenizer a model folder holds.
* :class:`HashingTokenizer` serves the named small architectures: it needs no vocabulary file and no
  download, accepts any text, and is deterministic across processes and machines. Words (lower-cased runs
  of letters/digits, and single punctuation marks) map to ``1 + blake2b(word) mod (vocab_size - 3)``;
  ``0`` pads, ``vocab_size - 2`` opens and ``vocab_size - 1`` closes a prompt (CLIP's layout). Distinct
  words may collide, which a small vocabulary makes rare and which only costs a random-init model a
  little capacity. A byte-level tokenizer was the alternative; words keep prompts short and give every
  category name its own embedding, which suits tiny text encoders.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor

from sam3tune.json_file import JsonFileError, read_json
from sam3tune.model.hub import ModelSpecError

_WORD = re.compile(r"\w+|[^\w\s]")


class Tokenizer(Protocol):
    """What the model bundle hands to the data collate."""

    max_length: int

    def __call__(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]: ...

    def save(self, directory: str | Path) -> None: ...


def pad_rows(rows: list[list[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), pad_id, dtype=torch.int64)
    mask = torch.zeros((len(rows), length), dtype=torch.int64)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.int64)
        mask[i, : len(row)] = 1
    return ids, mask


def check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("tokenize expects a list of prompt strings, got a single string")
    texts = list(texts)
    if not texts:
        raise ValueError("tokenize got an empty list of prompts")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"prompt {i} is {type(text).__name__}, not a string: {text!r}")
    return texts


class HashingTokenizer:
    """Offline word-hashing tokenizer for the named small architectures (see module docstring)."""

    FILE_NAME = "sam3tune_tokenizer.json"
    pad_id = 0

    def __init__(self, vocab_size: int, max_length: int):
        if vocab_size < 4:
            raise ValueError(f"vocab_size must be at least 4 (3 special ids + 1 word id), got {vocab_size}")
        if max_length < 2:
            raise ValueError(f"max_length must leave room for the start and end ids, got {max_length}")
        self.vocab_size = vocab_size
        self.max_length = max_length
        self.bos_id = vocab_size - 2
        self.eos_id = vocab_size - 1

    def word_id(self, word: str) -> int:
        digest = hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest()
        return 1 + int.from_bytes(digest, "little") % (self.vocab_size - 3)

    def __call__(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        rows = []
        for text in check_texts(texts):
            words = _WORD.findall(text.lower())[: self.max_length - 2]
            rows.append([self.bos_id, *(self.word_id(w) for w in words), self.eos_id])
        return pad_rows(rows, self.pad_id)

    def save(self, directory: str | Path) -> None:
        """Write ``sam3tune_tokenizer.json`` into ``directory``."""
        spec = {"type": "hashing-word", "vocab_size": self.vocab_size, "max_length": self.max_length}
        (Path(directory) / self.FILE_NAME).write_text(json.dumps(spec, indent=2) + "\n")

    @classmethod
    def load(cls, directory: str | Path) -> HashingTokenizer:
        path = Path(directory) / cls.FILE_NAME
        try:
            spec = read_json(path, "tokenizer file")
        except JsonFileError as err:
            raise ModelSpecError(f"cannot read tokenizer {path}: {err}") from err
        kind = spec.get("type") if isinstance(spec, dict) else spec
        if kind != "hashing-word":
            raise ModelSpecError(f"{path}: unknown tokenizer type {kind!r:.60} (expected 'hashing-word')")
        try:
            return cls(vocab_size=int(spec["vocab_size"]), max_length=int(spec["max_length"]))
        except (KeyError, TypeError, ValueError) as err:
            raise ModelSpecError(f"{path}: vocab_size and max_length must be integers ({err!r})") from err


class PretrainedTokenizer:
    """A Hugging Face tokenizer (e.g. SAM 3's CLIP BPE) behind the ``tokenize`` interface."""

    def __init__(self, tokenizer, max_length: int):
        self.tokenizer = tokenizer
        self.max_length = max_length

    def __call__(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        encoded = self.tokenizer(
            check_texts(texts),
            padding="longest",
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        return encoded["input_ids"].to(torch.int64), encoded["attention_mask"].to(torch.int64)

    def save(self, directory: str | Path) -> None:
        self.tokenizer.save_pretrained(str(directory))


def load_tokenizer(source: str | Path, max_length: int) -> Tokenizer:
    """The tokenizer saved with a model: ``sam3tune_tokenizer.json`` if present, SAM 3's CLIP tokenizer
    (Meta's cleaning) for CLIP BPE files, else the Hugging Face tokenizer found there."""
    from sam3tune.model.clip_tokenizer import ClipTokenizer

    if Path(source, HashingTokenizer.FILE_NAME).is_file():
        return HashingTokenizer.load(source)
    if ClipTokenizer.is_clip_folder(source):
        return ClipTokenizer.from_folder(source, max_length=max_length)
    from transformers import AutoTokenizer

    local = Path(source).is_dir()
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(source), local_files_only=local)
    except (OSError, ValueError) as err:
        raise ModelSpecError(
            f"no tokenizer found for {source}: expected {HashingTokenizer.FILE_NAME} or Hugging Face "
            f"tokenizer files (tokenizer.json / vocab.json + merges.txt) there ({err})"
        ) from err
    return PretrainedTokenizer(tokenizer, max_length=max_length)
