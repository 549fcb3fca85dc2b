"""A Meta SAM 3 checkpoint converted by ``sam3tune import-checkpoint`` predicts what Meta's model predicts.

Slow and big (full size: Meta's model and the converted one, ~10 GB): ``flock /tmp/sam3tune-bigmem.lock
pytest -m slow tests/model/test_meta_parity.py``. Meta's model keeps its own random initialisation (no
download); the checkpoint is written in ``sam3.pt``'s layout (``detector.`` keys next to tracker keys).
"""

import pytest
import torch
from transformers import Sam3Model

from sam3tune.cli import main
from sam3tune.model.tokenizer import load_tokenizer
from tests.model.meta_sam3 import build_meta_image_model, meta_predict


def _xyxy(boxes):
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)


@pytest.mark.slow
@pytest.mark.timeout(3 * 3600)
def test_imported_checkpoint_matches_meta_final_layer(tmp_path):
    torch.manual_seed(0)
    meta = build_meta_image_model("cpu").eval()
    state = {f"detector.{k}": v for k, v in meta.state_dict().items()}
    state["tracker.maskmem_tpos_enc"] = torch.zeros(7, 1, 1, 64)
    torch.save(state, tmp_path / "sam3.pt")
    del state
    assert main(["import-checkpoint", str(tmp_path / "sam3.pt"), str(tmp_path / "hf")]) == 0
    (tmp_path / "sam3.pt").unlink()
    hf = Sam3Model.from_pretrained(tmp_path / "hf").eval()
    tokenize = load_tokenizer(tmp_path / "hf", max_length=32)
    pixel_values = torch.rand(1, 3, 1008, 1008, generator=torch.Generator().manual_seed(1)) * 2 - 1
    worst = {"logits": 0.0, "boxes": 0.0, "presence": 0.0}
    for prompt in ["red apple", "a small brown nut"]:
        expected = meta_predict(meta, pixel_values, prompt)
        ids, mask = tokenize([prompt])
        with torch.inference_mode():
            got = hf(pixel_values=pixel_values, input_ids=ids, attention_mask=mask)
        worst["logits"] = max(worst["logits"], float((got.pred_logits - expected["pred_logits"]).abs().max()))
        boxes = _xyxy(expected["pred_boxes"])
        worst["boxes"] = max(worst["boxes"], float((got.pred_boxes - boxes).abs().max()))
        presence = expected["presence_logit_dec"].clamp(-10, 10)  # HF clamps presence logits at +-10
        worst["presence"] = max(worst["presence"], float((got.presence_logits - presence).abs().max()))
    print(f"max abs difference, Meta vs imported (2 prompts, 1008 px): {worst}")
    assert worst["logits"] < 1e-4 and worst["boxes"] < 1e-4 and worst["presence"] < 1e-4, worst
