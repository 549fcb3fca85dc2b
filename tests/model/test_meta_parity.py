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
@pytest.mark.xfail(
    strict=True,
    reason="measured 2026-11-30: max abs diff logits 0.073 (output spread 0.045), boxes 2.1e-3, presence "
    "5.9e-4; every converted module matches Meta's alone (test_meta_components), so the gap is in how the "
    "two models assemble them (suspects: Meta always appends the geometry encoder's prompt token, FPN "
    "neck, position encodings); not yet located",
)
def test_imported_checkpoint_matches_meta_final_layer(tmp_path):
    torch.manual_seed(0)
    meta = build_meta_image_model("cpu").eval()
    with torch.no_grad():  # built without a checkpoint, some of Meta's tensors are torch.empty garbage and
        for name, param in meta.named_parameters():  # its last box/presence layers zero: set every weight
            norm = "norm" in name or ".ln_" in name
            param.normal_(mean=1.0 if norm and name.endswith("weight") else 0.0, std=0.02)
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
        assert all(
            bool(torch.isfinite(t).all()) for t in (got.pred_logits, got.pred_boxes, got.presence_logits)
        )
        assert all(bool(torch.isfinite(v).all()) for v in expected.values()), expected
        spread = {k: float(expected[k].std()) for k in ("pred_logits", "pred_boxes")}
        assert min(spread.values()) > 1e-3, spread  # a degenerate (constant) output would prove nothing
        worst["logits"] = max(worst["logits"], float((got.pred_logits - expected["pred_logits"]).abs().max()))
        boxes = _xyxy(expected["pred_boxes"])
        worst["boxes"] = max(worst["boxes"], float((got.pred_boxes - boxes).abs().max()))
        presence = expected["presence_logit_dec"].clamp(-10, 10)  # HF clamps presence logits at +-10
        worst["presence"] = max(worst["presence"], float((got.presence_logits - presence).abs().max()))
        print(f"{prompt!r}: output spread {spread}, presence {expected['presence_logit_dec'].tolist()}")
    print(f"max abs difference, Meta vs imported (2 prompts, 1008 px): {worst}")
    assert worst["logits"] < 1e-4 and worst["boxes"] < 1e-4 and worst["presence"] < 1e-4, worst
