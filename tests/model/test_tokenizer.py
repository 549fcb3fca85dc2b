import pytest
import torch

from sam3tune.model import HashingTokenizer, PretrainedTokenizer, load_model
from sam3tune.model.tokenizer import load_tokenizer


def test_hashing_tokenizer_layout_and_padding():
    tok = HashingTokenizer(vocab_size=512, max_length=16)
    ids, mask = tok(["Red apple", "nut"])
    assert ids.dtype == mask.dtype == torch.int64
    assert ids.shape == mask.shape == (2, 4)  # padded to the longest prompt: bos red apple eos
    assert ids[0, 0] == ids[1, 0] == 510 and ids[0, 3] == ids[1, 2] == 511
    assert mask.tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    assert ids[1, 3] == tok.pad_id == 0
    words = torch.cat([ids[0, 1:3], ids[1, 1:2]])
    assert bool(((words > 0) & (words < 510)).all())


def test_hashing_tokenizer_is_stable_and_case_insensitive():
    tok = HashingTokenizer(vocab_size=512, max_length=16)
    assert tok(["RED Apple"])[0].tolist() == tok(["red apple"])[0].tolist()
    assert tok(["red,apple"])[0].shape[1] == 5  # punctuation is its own token
    assert tok(["red apple"])[0].tolist() == HashingTokenizer(512, 16)(["red apple"])[0].tolist()
    # Pinned ids: a changed scheme would silently break every saved tiny/small model.
    assert tok(["red apple"])[0].tolist() == [[510, 324, 188, 511]]


def test_hashing_tokenizer_truncates_keeping_end_token():
    tok = HashingTokenizer(vocab_size=64, max_length=5)
    ids, mask = tok(["one two three four five six"])
    assert ids.shape == (1, 5) and ids[0, -1] == 63 and mask.all()


def test_hashing_tokenizer_rejects_bad_input():
    tok = HashingTokenizer(vocab_size=64, max_length=8)
    with pytest.raises(TypeError, match="single string"):
        tok("apple")
    with pytest.raises(ValueError, match="empty"):
        tok([])
    with pytest.raises(TypeError, match="prompt 1"):
        tok(["apple", 3])
    with pytest.raises(ValueError, match="vocab_size"):
        HashingTokenizer(vocab_size=3, max_length=8)


def test_hashing_tokenizer_save_load(tmp_path):
    HashingTokenizer(vocab_size=300, max_length=9).save(tmp_path)
    loaded = load_tokenizer(tmp_path, max_length=32)
    assert isinstance(loaded, HashingTokenizer)
    assert (loaded.vocab_size, loaded.max_length) == (300, 9)


def test_pretrained_tokenizer_pads_to_longest_and_truncates(tmp_path):
    from tokenizers import Tokenizer as RawTokenizer
    from tokenizers import models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[BOS]": 1, "[EOS]": 2, **{c: 3 + i for i, c in enumerate("abcdefghij")}}
    raw = RawTokenizer(models.WordLevel(vocab, unk_token="[PAD]"))
    raw.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    raw.post_processor = processors.TemplateProcessing(
        single="[BOS] $A [EOS]", special_tokens=[("[BOS]", 1), ("[EOS]", 2)]
    )
    PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="[PAD]").save_pretrained(tmp_path)
    tok = load_tokenizer(tmp_path, max_length=6)
    assert isinstance(tok, PretrainedTokenizer)  # not a CLIP vocabulary: the folder's own tokenizer
    ids, mask = tok(["ab", "abcdefghij"])
    assert ids.dtype == torch.int64 and ids.shape == (2, 6)
    assert mask.tolist() == [[1, 1, 1, 1, 0, 0], [1] * 6]
    assert ids[0, :4].tolist() == [1, 3, 4, 2]
    assert ids[1, -1] == 2  # truncated prompts still end with the end-of-text id


def test_named_model_tokenizer_fits_its_vocabulary():
    bundle = load_model("tiny")
    ids, _ = bundle.tokenize(["any text at all: ünïcödé, 123!"])
    assert int(ids.max()) < bundle.model.config.text_config.vocab_size
