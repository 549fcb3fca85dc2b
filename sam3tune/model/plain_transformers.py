"""How to run a model sam3tune saved with plain ``transformers`` and get sam3tune's predictions: the
snippet that model folders (``README.md`` of :func:`sam3tune.model.export.save_merged`) and Hub model
cards carry.

The snippet preprocesses as sam3tune evaluates (the whole image resized bilinearly to the square
input, pixels scaled to [-1, 1]), tokenizes with the folder's CLIP tokenizer, and calls
``Sam3Model.forward`` the way the model runs in sam3tune: in ``meta`` prompt-token mode with one padding
box per query (``input_boxes`` zeros, ``input_boxes_labels`` -10), which appends the geometry encoder's
CLS token as Meta's SAM 3 does (``sam3tune.model.prompt_token``). Scores are sigmoid(logit) x
sigmoid(presence logit), as in sam3tune's postprocessing. (HF clamps presence logits at +-10, sam3tune
does not: scores differ only where the presence probability is above 0.99995.)
``tests/model/test_plain_transformers.py`` runs the snippet and compares it with sam3tune's ``Predictor``.
"""

from __future__ import annotations

import json

from sam3tune.model.prompt_token import check_mode

#: the part after loading; for each prompt it prints the kept boxes (xyxy pixels of the image), their scores
#: and the shape of their masks ((N, H, W) bool, the logits upsampled to the image bilinearly, > 0)
_RUN = '''image = Image.open(IMAGE).convert("RGB")
side = model.config.image_size
pixels = np.asarray(image.resize((side, side), Image.Resampling.BILINEAR), dtype=np.float32)
pixel_values = torch.from_numpy(pixels / 127.5 - 1.0).permute(2, 0, 1)[None]  # mean = std = 0.5
text = tokenizer(PROMPTS, padding="max_length", max_length=32, truncation=True, return_tensors="pt")
queries = len(PROMPTS)
with torch.no_grad():
    outputs = model(
        pixel_values=pixel_values.expand(queries, -1, -1, -1),
        input_ids=text["input_ids"],
        attention_mask=text["attention_mask"],{boxes}
    )
scores = outputs.pred_logits.sigmoid() * outputs.presence_logits.sigmoid()  # (queries, Q)
boxes = outputs.pred_boxes.clamp(0, 1) * torch.tensor([image.width, image.height] * 2)  # xyxy pixels
masks = torch.nn.functional.interpolate(
    outputs.pred_masks, size=(image.height, image.width), mode="bilinear", align_corners=False
) > 0
for prompt, s, b, m in zip(PROMPTS, scores, boxes, masks):
    keep = s > 0.5
    print(prompt, b[keep].tolist(), s[keep].tolist(), m[keep].shape)'''

_PADDING_BOX = '''
        # the geometry encoder's prompt token, as this model was trained (Meta's SAM 3 forward):
        # one padding box per query (label -10, masked out) appends it to every prompt
        input_boxes=torch.zeros(queries, 1, 4),
        input_boxes_labels=torch.full((queries, 1), -10),'''


def snippet(
    model_id: str,
    prompt_token: str,
    *,
    base: str | None = None,
    image: str = "photo.jpg",
    prompts: tuple[str, ...] = ("date", "fig"),
) -> str:
    """Python code running the model ``model_id`` (a hub id or folder) with plain transformers, for a model
    in ``prompt_token`` mode (``meta``: with the padding box; ``hf``: without). ``base``: LoRA adapters in
    ``model_id`` go on top of this base model (peft)."""
    mode = check_mode(prompt_token, "prompt_token")
    if base is None:
        load = [f"model = Sam3Model.from_pretrained({_quote(model_id)}).eval()"]
    else:
        load = [
            f"base = Sam3Model.from_pretrained({_quote(base)})",
            f"model = PeftModel.from_pretrained(base, {_quote(model_id)}).merge_and_unload().eval()",
        ]
    lines = [
        "import numpy as np",
        "import torch",
        *(["from peft import PeftModel"] if base is not None else []),
        "from PIL import Image",
        "from transformers import AutoTokenizer, Sam3Model",
        "",
        *load,
        f"tokenizer = AutoTokenizer.from_pretrained({_quote(model_id)})",
        f"IMAGE, PROMPTS = {_quote(image)}, {json.dumps(list(prompts))}",
        _RUN.format(boxes=_PADDING_BOX if mode == "meta" else ""),
    ]
    return "\n".join(lines) + "\n"


def _quote(text: str) -> str:
    return json.dumps(text)  # a Python string literal in double quotes


def usage_markdown(model_id: str, prompt_token: str, *, base: str | None = None) -> list[str]:
    """Markdown lines: the snippet and what it does (for README files and model cards)."""
    token = (
        "It passes one padding box per query: that appends the geometry encoder's prompt token, as Meta's "
        "SAM 3 forward does and as this model was trained (sam3tune `model.prompt_token: meta`). Without "
        "it, plain `Sam3Model.forward` leaves the token out and predicts differently."
        if prompt_token == "meta"
        else "This model was trained without the geometry encoder's prompt token (sam3tune "
        "`model.prompt_token: hf`), as plain `Sam3Model.forward` runs: pass no boxes."
    )
    return [
        "With plain transformers (the outputs sam3tune predicts: same preprocessing, same forward, "
        "scores = sigmoid(logit) x sigmoid(presence logit)):",
        "",
        "```python",
        snippet(model_id, prompt_token, base=base).rstrip("\n"),
        "```",
        "",
        token,
        "",
    ]
