"""The plain-transformers snippet that saved model folders and model cards carry gives sam3tune's own
predictions (``sam3tune.model.plain_transformers``): the snippet is executed as written and compared with
``Predictor`` on the same image and prompts, in both prompt-token modes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from sam3tune.eval.config import PostprocessConfig
from sam3tune.model import NAMED_ARCHITECTURES, ClipTokenizer, Sam3ForTraining
from sam3tune.model.architectures import build_named_model
from sam3tune.model.plain_transformers import snippet
from sam3tune.model.prompt_token import set_prompt_token
from sam3tune.predict import Predictor
from tests.model.meta_sam3 import clip_bpe_file

PROMPTS = ("red apple", "a small brown nut")


@pytest.fixture(scope="module")
def clip_tokenizer():
    return ClipTokenizer.from_bpe_file(clip_bpe_file(), max_length=32)


def _saved_model(folder, tokenizer, mode: str):
    """The tiny architecture with CLIP's vocabulary (its start / end ids are CLIP's), saved by sam3tune."""
    spec = dataclasses.replace(NAMED_ARCHITECTURES["tiny"], text_vocab_size=49408, text_max_length=32)
    sam3 = build_named_model(spec, seed=3)
    set_prompt_token(sam3, mode)
    Sam3ForTraining(sam3, tokenizer).save_pretrained(folder)


@pytest.mark.parametrize("mode", ["meta", "hf"])
def test_snippet_predicts_what_sam3tune_predicts(tmp_path, clip_tokenizer, mode, capsys):
    _saved_model(tmp_path / "model", clip_tokenizer, mode)
    readme = (tmp_path / "model" / "README.md").read_text()
    assert ("input_boxes_labels=torch.full((queries, 1), -10)" in readme) == (mode == "meta")
    image = Image.fromarray(
        np.random.default_rng(0).integers(0, 256, size=(90, 120, 3), dtype=np.uint8)
    )  # not square: the resize and the boxes' scale both matter
    image.save(tmp_path / "photo.png")

    namespace: dict = {}
    exec(
        snippet(str(tmp_path / "model"), mode, image=str(tmp_path / "photo.png"), prompts=PROMPTS), namespace
    )
    assert capsys.readouterr().out.count("\n") == len(PROMPTS)  # it prints one line per prompt
    scores, boxes, masks = namespace["scores"], namespace["boxes"], namespace["masks"]

    queries = namespace["model"].config.detr_decoder_config.num_queries
    config = PostprocessConfig(score_threshold=0.0, max_detections=queries, with_masks=True)
    found = Predictor.load(tmp_path / "model", config=config, device="cpu").predict(
        tmp_path / "photo.png", list(PROMPTS)
    )
    for row, prompt in enumerate(PROMPTS):
        ours = found[prompt]
        order = torch.argsort(scores[row], descending=True, stable=True)
        torch.testing.assert_close(
            torch.from_numpy(ours.scores), scores[row][order], rtol=0, atol=1e-5, msg=prompt
        )
        torch.testing.assert_close(
            torch.from_numpy(ours.boxes), boxes[row][order], rtol=0, atol=1e-3, msg=prompt
        )  # pixels
        agree = (torch.from_numpy(ours.mask_array()) == masks[row][order]).float().mean()
        assert float(agree) > 0.999, (prompt, float(agree))  # only pixels at the 0.5 boundary may flip


def test_without_the_padding_box_a_meta_model_predicts_otherwise(tmp_path, clip_tokenizer):
    """What the padding box is for: plain ``Sam3Model.forward`` without it drops the prompt token."""
    _saved_model(tmp_path / "model", clip_tokenizer, "meta")
    Image.new("RGB", (64, 64), (200, 40, 40)).save(tmp_path / "photo.png")
    runs = {}
    for mode in ("meta", "hf"):
        namespace: dict = {}
        exec(
            snippet(str(tmp_path / "model"), mode, image=str(tmp_path / "photo.png"), prompts=PROMPTS),
            namespace,
        )
        runs[mode] = namespace["scores"]
    assert float((runs["meta"] - runs["hf"]).abs().max()) > 1e-3
