"""SAM 3's CLIP tokenizer against Meta's ``SimpleTokenizer`` (sam3 0.1.4), prompt for prompt."""

import json

import pytest
import torch

from sam3tune.model.clip_tokenizer import ClipTokenizer, clean_prompt
from sam3tune.model.hub import ModelSpecError
from sam3tune.model.tokenizer import load_tokenizer
from tests.model.meta_sam3 import clip_bpe_file, import_meta

CORPUS = [
    # ASCII names, plural, digits
    "red apple",
    "nut",
    "Walnut",
    "BRAZIL NUT",
    "person",
    "traffic light",
    "stop sign 2",
    "3 bottles",
    "iPhone 15 Pro",
    "can't",
    "the dog's bowl",
    "we're here",
    # hyphens, underscores, punctuation, whitespace
    "t-shirt",
    "hot_dog",
    "fire__hydrant",
    "cell phone, (black)",
    "what?!",
    "a.b.c",
    "  leading and   trailing\tspaces \n",
    "semi;colon:s / slashes\\",
    "",
    # accents, composed and combining
    "café",
    "cafe\u0301",
    "jalapeño pepper",
    "Crème Brûlée",
    "Ångström",
    "naïve façade",
    # HTML entities (once and twice escaped)
    "fish &amp; chips",
    "fish &amp;amp; chips",
    "&lt;tag&gt;",
    "caf&eacute;",
    "5&nbsp;cm",
    # ligatures, full-width letters, mojibake
    "ﬁsh",
    "ｆｕｌｌｗｉｄｔｈ",
    "ﬀ ligature",
    "cafÃ©",
    "donâ€™t",
    # emoji, CJK, other scripts
    "🍎 apple",
    "👍🏽",
    "苹果",
    "リンゴ",
    "사과",
    "яблоко",
    "تفاحة",
    # special-token text: Hugging Face's names are plain text; Meta's own names are control tokens there
    "<|endoftext|>",
    "apple <|startoftext|> pear",
    "<end_of_text>",
    "a <start_of_text> b",
    # longer than 32 tokens (truncated, end token kept last)
    "a very long prompt describing the small round red apple lying next to a green pear on the "
    "wooden kitchen table under the window in the morning light with many other fruits",
    " ".join(["supercalifragilisticexpialidocious"] * 8),
    "1234567890" * 4,
]


@pytest.fixture(scope="module")
def meta():
    tokenizer_ve = import_meta("model.tokenizer_ve")
    return tokenizer_ve.SimpleTokenizer(str(clip_bpe_file()), context_length=32)


@pytest.fixture(scope="module")
def ours():
    return ClipTokenizer.from_bpe_file(clip_bpe_file(), max_length=32)


def _assert_meta_ids(tokenizer, meta, prompts):
    ids, mask = tokenizer(prompts)
    expected = meta(prompts)  # (B, 32), padded with 0
    assert ids.shape[1] <= 32 and ids.dtype == mask.dtype == torch.int64
    lengths = (expected != 0).sum(1)
    for i, prompt in enumerate(prompts):
        n = int(lengths[i])
        assert ids[i, :n].tolist() == expected[i, :n].tolist(), f"prompt {prompt!r}"
        assert mask[i].sum() == n and bool(mask[i, :n].all()), f"prompt {prompt!r}"
        assert bool((ids[i, n:] == 0).all())


def test_corpus_gives_meta_ids_prompt_for_prompt(meta, ours):
    assert len(CORPUS) >= 40
    _assert_meta_ids(ours, meta, CORPUS)


def test_the_differences_that_a_plain_clip_tokenizer_gets_wrong(ours):
    start, end = ours.start_id, ours.end_id
    assert (start, end) == (49406, 49407)
    assert clean_prompt("fish &amp;amp; chips") == "fish & chips"
    assert clean_prompt("ﬁsh ｆｕｌｌ cafÃ©") == "fish full café"
    assert ours(["ﬁsh"])[0].tolist() == ours(["fish"])[0].tolist()
    ids, mask = ours(["<|endoftext|>"])
    assert mask.sum() > 3 and end not in ids[0, 1:-1].tolist()  # plain text, not an early end
    assert ours(["<|endoftext|>"])[0].tolist() == ours(["<|ENDOFTEXT|>"])[0].tolist()


def test_truncation_keeps_the_end_token_last(ours):
    ids, mask = ours([CORPUS[-3], "apple"])
    assert ids.shape == (2, 32) and bool(mask[0].all())
    assert ids[0, 0] == ours.start_id and ids[0, -1] == ours.end_id
    assert mask[1].sum() == 3 and ids[1, 3:].eq(0).all()


def test_folder_files_give_the_same_ids_and_plain_transformers_reads_them(tmp_path, meta, ours):
    from transformers import CLIPTokenizer

    ours.save(tmp_path)
    loaded = load_tokenizer(tmp_path, max_length=32)
    assert isinstance(loaded, ClipTokenizer)
    _assert_meta_ids(loaded, meta, CORPUS)
    hf = CLIPTokenizer.from_pretrained(tmp_path)
    assert hf("red apple")["input_ids"] == ours(["red apple"])[0][0].tolist()

    # a folder holding only tokenizer.json (the fast-tokenizer file) reads the same vocabulary
    only_json = tmp_path / "fast"
    only_json.mkdir()
    merges = [f"{a} {b}" for a, b in ours.merges]
    (only_json / "tokenizer.json").write_text(
        json.dumps({"model": {"type": "BPE", "vocab": ours.vocab, "merges": merges}})
    )
    _assert_meta_ids(load_tokenizer(only_json, max_length=32), meta, CORPUS[:12])


def test_find_local_says_how_to_provide_the_bpe_file(tmp_path, monkeypatch):
    monkeypatch.setenv("SAM3TUNE_CLIP_BPE", str(tmp_path / "nowhere.txt.gz"))
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(ModelSpecError, match=r"SAM3TUNE_CLIP_BPE=.*open_clip_torch"):
        ClipTokenizer.find_local()
    monkeypatch.undo()
    monkeypatch.setenv("SAM3TUNE_CLIP_BPE", str(clip_bpe_file()))
    assert ClipTokenizer.find_local().vocab == ClipTokenizer.from_bpe_file(clip_bpe_file()).vocab


def test_a_broken_bpe_file_is_refused_by_name(tmp_path):
    bad = tmp_path / "bpe.txt.gz"
    bad.write_bytes(b"not gzip")
    with pytest.raises(ValueError, match=r"bpe\.txt\.gz"):
        ClipTokenizer.from_bpe_file(bad)


def test_the_corpus_catches_a_plain_clip_tokenizer(tmp_path, ours):
    """The corpus has teeth: transformers' CLIP tokenizer on the same files misses Meta's ids on many."""
    from transformers import CLIPTokenizer

    ours.save(tmp_path)
    plain = CLIPTokenizer.from_pretrained(tmp_path)
    differ = [p for p in CORPUS if plain(p, truncation=True, max_length=32)["input_ids"] != _valid(ours, p)]
    assert len(differ) >= 10 and "fish &amp; chips" in differ and "<|endoftext|>" in differ


def _valid(tokenizer, prompt):
    ids, mask = tokenizer([prompt])
    return ids[0][mask[0].bool()].tolist()
