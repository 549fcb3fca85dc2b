"""SAM 3's prompt tokenizer: CLIP byte-level BPE with the text cleaning Meta's SAM 3 was trained with.

The released weights saw prompts tokenised by Meta's ``SimpleTokenizer`` (sam3 0.1.4,
``clean="lower"``, context 32). A Hugging Face CLIP tokenizer built from the same BPE file gives
different ids for some prompts, so :class:`ClipTokenizer` reproduces Meta's steps instead, id for id:

1. clean: ``ftfy.fix_text`` (mojibake, ligatures, full-width letters, NFC), HTML entities unescaped
   twice (``&amp;amp;`` -> ``&``), runs of whitespace collapsed to one space, stripped, lower-cased;
2. split into pieces with CLIP's pattern (contractions, letter runs, single digits, runs of other
   symbols); Meta's own special names ``<start_of_text>`` / ``<end_of_text>`` are pieces of their own
   and map to the start / end ids, exactly as in Meta's tokenizer. Hugging Face's names
   ``<|startoftext|>`` / ``<|endoftext|>`` inside a prompt are plain text;
3. every piece -> its UTF-8 bytes as printable characters -> BPE merges (lowest rank first; the last
   symbol carries the ``</w>`` end-of-word mark) -> vocabulary ids;
4. ``start + ids + end``, cut to ``max_length`` with the end id kept last; batches are right-padded
   with 0 (Meta's padding) to their longest prompt.

The vocabulary comes from a model folder's ``vocab.json`` + ``merges.txt`` (or ``tokenizer.json``), or
from the gzipped BPE merges file CLIP ships (``bpe_simple_vocab_16e6.txt.gz``); :meth:`save` writes
``vocab.json``, ``merges.txt`` and a ``tokenizer_config.json`` that plain transformers also reads.
"""

from __future__ import annotations

import gzip
import html
import importlib.util
import itertools
import json
import os
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import regex
from torch import Tensor

from sam3tune.json_file import JsonFileError, read_json
from sam3tune.model.hub import ModelSpecError
from sam3tune.model.tokenizer import check_texts, pad_rows

START, END = "<|startoftext|>", "<|endoftext|>"  # names in Hugging Face's CLIP vocabulary
META_START, META_END = "<start_of_text>", "<end_of_text>"  # what Meta's tokenizer treats as control text
BPE_FILE_NAME = "bpe_simple_vocab_16e6.txt.gz"
BPE_ENV = "SAM3TUNE_CLIP_BPE"
#: merges CLIP uses from its BPE file: vocabulary 49408 = 2 x 256 byte symbols + merges + 2 special
NUM_MERGES = 49152 - 256 - 2

_PIECE = regex.compile(
    rf"{META_START}|{META_END}|'s|'t|'re|'ve|'m|'ll|'d|\p{{L}}+|\p{{N}}|[^\s\p{{L}}\p{{N}}]+",
    regex.IGNORECASE,
)
_SPACE = regex.compile(r"\s+")


@cache
def byte_symbols() -> tuple[str, ...]:
    """Byte value -> a printable character standing for it (GPT-2 / CLIP byte-level BPE).

    Printable Latin-1 bytes stand for themselves; the others (controls, space, soft hyphen, ...)
    take the code points from 256 upwards, in byte order.
    """
    ranges = (("!", "~"), ("¡", "¬"), ("®", "ÿ"))
    printable = [b for first, last in ranges for b in range(ord(first), ord(last) + 1)]
    symbols: dict[int, str] = {b: chr(b) for b in printable}
    extra = 256
    for b in range(256):
        if b not in symbols:
            symbols[b] = chr(extra)
            extra += 1
    return tuple(symbols[b] for b in range(256))


def clean_prompt(text: str) -> str:
    """Meta's ``clean="lower"`` text cleaning (step 1 of the module docstring)."""
    import ftfy

    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return _SPACE.sub(" ", text).strip().lower()


def _printable_order() -> list[str]:
    """The 256 byte symbols in the order CLIP's vocabulary lists them (printable bytes first)."""
    symbols = byte_symbols()
    first = [b for b in range(256) if symbols[b] == chr(b)]
    return [symbols[b] for b in first] + [symbols[b] for b in range(256) if symbols[b] != chr(b)]


class ClipTokenizer:
    """CLIP BPE with Meta's SAM 3 text cleaning; ``tokenize(texts) -> (input_ids, attention_mask)``."""

    pad_id = 0

    def __init__(self, vocab: dict[str, int], merges: Sequence[tuple[str, str]], max_length: int = 32):
        missing = [name for name in (START, END) if name not in vocab]
        if missing:
            raise ValueError(f"not a CLIP vocabulary: {missing} missing")
        if max_length < 2:
            raise ValueError(f"max_length must leave room for the start and end ids, got {max_length}")
        self.vocab = dict(vocab)
        self.merges = [tuple(m) for m in merges]
        self.ranks = {pair: rank for rank, pair in enumerate(self.merges)}
        self.max_length = max_length
        self.start_id, self.end_id = vocab[START], vocab[END]
        self._pieces: dict[str, list[int]] = {META_START: [self.start_id], META_END: [self.end_id]}

    # ---------------------------------------------------------------------------------- construction
    @classmethod
    def from_bpe_file(cls, path: str | Path, max_length: int = 32) -> ClipTokenizer:
        """From CLIP's gzipped merges file (``bpe_simple_vocab_16e6.txt.gz``, as open_clip ships it)."""
        try:
            with gzip.open(path, "rt", encoding="utf-8") as file:
                lines = file.read().split("\n")
        except (OSError, EOFError, UnicodeDecodeError) as err:
            raise ModelSpecError(f"cannot read the CLIP BPE file {path}: {err}") from err
        merges = [tuple(line.split()) for line in lines[1 : NUM_MERGES + 1]]
        if len(merges) != NUM_MERGES or any(len(m) != 2 for m in merges):
            raise ModelSpecError(f"{path} is not CLIP's BPE file: expected a header and {NUM_MERGES} merges")
        symbols = _printable_order()
        names = [*symbols, *(s + "</w>" for s in symbols), *("".join(m) for m in merges), START, END]
        return cls({name: i for i, name in enumerate(names)}, merges, max_length)

    @classmethod
    def from_folder(cls, folder: str | Path, max_length: int = 32) -> ClipTokenizer:
        """From Hugging Face tokenizer files: ``vocab.json`` + ``merges.txt``, else ``tokenizer.json``."""
        folder = Path(folder)
        vocab_file, merges_file = folder / "vocab.json", folder / "merges.txt"
        try:
            if vocab_file.is_file() and merges_file.is_file():
                vocab = read_json(vocab_file, "CLIP vocabulary")
                lines = merges_file.read_text(encoding="utf-8").splitlines()
                merges = [tuple(line.split()) for line in lines if line and not line.startswith("#version")]
            else:
                model = read_json(folder / "tokenizer.json", "tokenizer file")["model"]
                vocab = model["vocab"]
                merges = [tuple(m.split(" ") if isinstance(m, str) else m) for m in model["merges"]]
        except (OSError, KeyError, TypeError, JsonFileError) as err:
            raise ModelSpecError(f"cannot read CLIP tokenizer files in {folder}: {err}") from err
        return cls(vocab, merges, max_length)

    @classmethod
    def find_local(cls, max_length: int = 32, bpe_path: str | Path | None = None) -> ClipTokenizer:
        """The CLIP tokenizer from a BPE file on this machine: ``bpe_path``, else ``$SAM3TUNE_CLIP_BPE``,
        else the copy inside an installed ``open_clip_torch``. Raises ``ModelSpecError`` saying where
        it looked and how to provide one."""
        candidates = [Path(p) for p in (bpe_path, os.environ.get(BPE_ENV)) if p]
        spec = importlib.util.find_spec("open_clip")
        if spec is not None and spec.submodule_search_locations:
            candidates += [Path(p, BPE_FILE_NAME) for p in spec.submodule_search_locations]
        for path in candidates:
            if path.is_file():
                return cls.from_bpe_file(path, max_length)
        looked = ", ".join(str(p) for p in candidates) or "nowhere (no path given, open_clip not installed)"
        raise ModelSpecError(
            f"the released SAM 3 architecture needs CLIP's BPE vocabulary ({BPE_FILE_NAME}); looked in "
            f"{looked}. Set {BPE_ENV}=/path/to/{BPE_FILE_NAME}, or `pip install --no-deps open_clip_torch` "
            f"(it ships the file)."
        )

    @staticmethod
    def is_clip_folder(folder: str | Path) -> bool:
        """Whether ``folder`` holds a CLIP BPE vocabulary (vocab.json + merges.txt, or tokenizer.json)."""
        folder = Path(folder)
        for name in ("vocab.json", "tokenizer.json"):
            path = folder / name
            if path.is_file() and f'"{END}"' in path.read_text(encoding="utf-8", errors="replace"):
                return name == "tokenizer.json" or (folder / "merges.txt").is_file()
        return False

    def save(self, directory: str | Path) -> None:
        """Write ``vocab.json``, ``merges.txt`` and ``tokenizer_config.json`` (CLIPTokenizer) there."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "vocab.json").write_text(json.dumps(self.vocab, ensure_ascii=False), encoding="utf-8")
        merges = "".join(f"{a} {b}\n" for a, b in self.merges)
        (directory / "merges.txt").write_text("#version: 0.2\n" + merges, encoding="utf-8")
        config = {
            "tokenizer_class": "CLIPTokenizer",
            "model_max_length": self.max_length,
            "bos_token": START,
            "eos_token": END,
            "pad_token": END,
            "unk_token": END,
        }
        (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")

    # ---------------------------------------------------------------------------------- tokenizing
    def _merge(self, piece: str) -> list[str]:
        """BPE of one piece (byte symbols): merge the lowest-ranked adjacent pair until none is left."""
        parts = [*piece[:-1], piece[-1] + "</w>"]
        while len(parts) > 1:
            ranked = [(self.ranks.get(pair, len(self.ranks)), pair) for pair in itertools.pairwise(parts)]
            rank, (first, second) = min(ranked)
            if rank == len(self.ranks):
                break
            merged: list[str] = []
            i = 0
            while i < len(parts):
                if i + 1 < len(parts) and parts[i] == first and parts[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        return parts

    def _piece_ids(self, piece: str) -> list[int]:
        ids = self._pieces.get(piece)
        if ids is None:
            symbols = byte_symbols()
            encoded = "".join(symbols[b] for b in piece.encode("utf-8"))
            ids = [self.vocab[p] for p in self._merge(encoded)]
            self._pieces[piece] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        """Ids of ``text`` without start/end ids and without truncation."""
        return [i for piece in _PIECE.findall(clean_prompt(text)) for i in self._piece_ids(piece)]

    def __call__(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        rows = []
        for text in check_texts(texts):
            row = [self.start_id, *self.encode(text)][: self.max_length - 1]
            rows.append([*row, self.end_id])
        return pad_rows(rows, self.pad_id)
