"""A Meta SAM 3 checkpoint converted by ``sam3tune import-checkpoint`` predicts what Meta's model predicts,
through sam3tune's own forward (``meta`` prompt-token mode, which the imported folder records).

Meta's model keeps its own architecture and random weights (no download), re-drawn so that nothing is
zero or uninitialised; the checkpoint is written in ``sam3.pt``'s layout (``detector.`` keys next to
tracker keys) and imported; both run one image with two text prompts. On failure the message
lists every intermediate stage (``tests.model.meta_stages``) and names the first that diverges.

* reduced size (default suite): the released widths and DETR / mask decoder at 336 px, 2 ViT blocks
  (windowed with 12-patch windows, then global) and 2 CLIP layers, built by Meta's own builder
  (``tests.model.meta_sam3.Reduced``);
* full size (slow, ~10 GB: ``flock /tmp/sam3tune-fullsize.lock pytest -m slow
  tests/model/test_meta_parity.py -s``): the released architecture.
"""

from __future__ import annotations

import time

import pytest
import torch

from sam3tune.cli import main
from sam3tune.model import Sam3ForTraining, load_model
from sam3tune.model.meta_checkpoint import import_checkpoint
from sam3tune.model.prompt_token import set_prompt_token
from tests.model.meta_sam3 import (
    Reduced,
    build_meta_image_model,
    meta_predict,
    meta_state_for_import,
    randomize_meta_weights,
)
from tests.model.meta_stages import (
    compare_stages,
    first_divergence,
    meta_outputs_as_stages,
    report,
    sam3tune_stages,
)

PROMPTS = ("red apple", "a small brown nut")
FINAL = ("logits", "boxes", "presence", "masks")
TOLERANCE = 1e-4
REDUCED = Reduced()


def _import(meta, tmp_path, config=None) -> Sam3ForTraining:
    """Meta's weights saved as ``sam3.pt`` and imported (the CLI for the released architecture)."""
    torch.save(meta_state_for_import(meta), tmp_path / "sam3.pt")
    if config is None:
        assert main(["import-checkpoint", str(tmp_path / "sam3.pt"), str(tmp_path / "hf")]) == 0
    else:
        import_checkpoint(tmp_path / "sam3.pt", tmp_path / "hf", config=config)
    (tmp_path / "sam3.pt").unlink()
    bundle = load_model(tmp_path / "hf")
    return Sam3ForTraining(bundle.model, bundle.tokenize, one_to_many=False).eval()


def _image(size: int) -> torch.Tensor:
    return torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1)) * 2 - 1


def _compare(meta, model: Sam3ForTraining) -> tuple[dict[str, float], list[str], dict]:
    """Worst final-output difference over the prompts, each prompt's stage report, and Meta's stages of
    the first prompt."""
    pixel_values = _image(model.image_size)
    worst = dict.fromkeys(FINAL, 0.0)
    reports, first = [], None
    for prompt in PROMPTS:
        stages: dict = {}
        expected = meta_outputs_as_stages(meta_predict(meta, pixel_values, prompt, stages), stages)
        first = first or expected
        got = sam3tune_stages(model, pixel_values, *model.tokenizer([prompt]))
        spread = float(expected["logits"].std())
        assert spread > 1e-3, spread  # a degenerate (constant) output would prove nothing
        differences = compare_stages(got, expected)
        for difference in differences:
            if difference.name in FINAL:
                worst[difference.name] = max(worst[difference.name], difference.max_abs)
        reports.append(f"{prompt!r} (logit spread {spread:.3g}):\n{report(differences)}")
    return worst, reports, first


def test_reduced_size_import_matches_meta_stage_by_stage(tmp_path):
    started = time.perf_counter()
    meta = build_meta_image_model("cpu", REDUCED).eval()
    randomize_meta_weights(meta)
    model = _import(meta, tmp_path, REDUCED.hf_config())
    assert model.prompt_token == "meta"  # recorded by import-checkpoint
    assert model.core.config.vision_config.backbone_config.layer_norm_eps == 1e-5  # Meta's ViT eps
    worst, reports, expected = _compare(meta, model)
    print("\n".join(reports), f"\nworst {worst}, {time.perf_counter() - started:.0f} s")
    assert all(value < TOLERANCE for value in worst.values()), "\n".join(reports)

    # the helper names where HF's own forward departs: its prompt lacks the geometry token
    set_prompt_token(model.core, "hf")
    pixel_values = _image(model.image_size)
    differences = compare_stages(
        sam3tune_stages(model, pixel_values, *model.tokenizer([PROMPTS[0]])), expected
    )
    first = first_divergence(differences)
    assert first is not None and first.name == "prompt", report(differences)
    final = {d.name: d.max_abs for d in differences if d.name in FINAL}
    assert final["logits"] > 10 * TOLERANCE, final


@pytest.mark.slow
@pytest.mark.timeout(3 * 3600)
def test_imported_checkpoint_matches_meta_at_full_size(tmp_path):
    started = time.perf_counter()
    meta = build_meta_image_model("cpu").eval()
    randomize_meta_weights(meta)
    model = _import(meta, tmp_path)
    worst, reports, expected = _compare(meta, model)
    print("\n".join(reports), f"\nworst {worst}, {time.perf_counter() - started:.0f} s")
    assert all(value < TOLERANCE for value in worst.values()), "\n".join(reports)

    # figures for the docs: the same model with HF's default ViT LayerNorm eps, and as HF runs it
    pixel_values, ids = _image(model.image_size), model.tokenizer([PROMPTS[0]])
    vit_norms = [m for m in model.core.vision_encoder.backbone.modules() if isinstance(m, torch.nn.LayerNorm)]
    for eps, mode in ((1e-6, "meta"), (1e-5, "hf"), (1e-6, "hf")):
        for norm in vit_norms:
            norm.eps = eps
        set_prompt_token(model.core, mode)
        differences = compare_stages(sam3tune_stages(model, pixel_values, *ids), expected)
        print(f"ViT eps {eps:g}, prompt_token={mode}:\n{report(differences)}")
