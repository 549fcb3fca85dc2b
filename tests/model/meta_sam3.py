"""TEST-ONLY: Meta's ``sam3==0.1.4`` modules and CLIP's BPE file as references for the model tests.

``sam3/__init__.py`` is not executed (it builds the whole model zoo); ``iopath`` (used by Meta's
tokenizer only to open a file) gets a stand-in that opens local paths.
"""

from __future__ import annotations

import builtins
import contextlib
import importlib
import importlib.abc
import importlib.util
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.meta_reference import reference_unavailable


def clip_bpe_file() -> Path:
    """CLIP's ``bpe_simple_vocab_16e6.txt.gz`` from the installed ``open_clip_torch`` (test-only)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        reference_unavailable("open_clip_torch (the CLIP BPE file) is not installed; scripts/setup.sh --test")
    path = Path(next(iter(spec.submodule_search_locations)), "bpe_simple_vocab_16e6.txt.gz")
    if not path.is_file():
        reference_unavailable(f"{path} is missing from the installed open_clip_torch")
    return path


def import_meta(module: str) -> types.ModuleType:
    """``sam3.<module>`` from Meta's package, or skip (fail under SAM3TUNE_REQUIRE_META_SAM3=1)."""
    if "sam3" not in sys.modules:
        spec = importlib.util.find_spec("sam3")
        if spec is None or not spec.submodule_search_locations:
            reference_unavailable("Meta's sam3==0.1.4 is not installed; scripts/setup.sh --test")
        package = types.ModuleType("sam3")
        package.__path__ = list(spec.submodule_search_locations)
        package.__spec__ = spec
        sys.modules["sam3"] = package
    if "iopath.common.file_io" not in sys.modules and importlib.util.find_spec("iopath") is None:
        file_io = types.ModuleType("iopath.common.file_io")
        file_io.g_pathmgr = types.SimpleNamespace(open=builtins.open)
        for name in ("iopath", "iopath.common"):
            sys.modules.setdefault(name, types.ModuleType(name))
        sys.modules["iopath.common.file_io"] = file_io
    try:
        return importlib.import_module(f"sam3.{module}")
    except ImportError as err:
        reference_unavailable(f"Meta's sam3.{module} is not importable here: {err}")


class _Anything:
    """Stands for any name of a stubbed library: callable, subclassable, any attribute."""

    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, *args, **kwargs):
        return args[0] if len(args) == 1 and callable(args[0]) and not kwargs else _Anything()

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Anything()

    def __getitem__(self, key):
        return _Anything()


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports any submodule of the stubbed libraries as an empty package whose names are ``_Anything``."""

    def __init__(self, roots: set[str]) -> None:
        self.roots = roots

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.roots:
            return importlib.util.spec_from_loader(name, self, is_package=True)
        return None

    def create_module(self, spec):
        module = types.ModuleType(spec.name)
        module.__path__ = []

        def attribute(name):
            if name.startswith("__"):
                raise AttributeError(name)  # __file__ & co.: what introspection asks of a module
            return _Anything if name[:1].isupper() else _Anything()

        module.__getattr__ = attribute
        return module

    def exec_module(self, module):
        pass


@contextlib.contextmanager
def _stand_ins() -> Iterator[None]:
    """Stand-ins, while Meta's modules are imported and built, for what they import but the image model
    with text prompts on the CPU does not need: torchvision (box-prompt RoI pooling, video and data
    transforms), triton (CUDA kernels), cv2/decord (video), and timm's ``DropPath`` / ``Mlp`` /
    ``trunc_normal_`` (re-implemented: ``Mlp`` is fc1 -> act -> fc2, the layout of Meta's keys).
    Afterwards the stand-ins leave ``sys.modules`` again, so no other test sees a fake torchvision."""
    from torch import nn

    class Mlp(nn.Module):
        def __init__(self, in_features, hidden_features=None, out_features=None, act_layer=nn.GELU, drop=0.0):
            super().__init__()
            self.fc1 = nn.Linear(in_features, hidden_features or in_features)
            self.act = act_layer()
            self.fc2 = nn.Linear(hidden_features or in_features, out_features or in_features)

        def forward(self, x):
            return self.fc2(self.act(self.fc1(x)))

    class DropPath(nn.Identity):
        def __init__(self, *args, **kwargs):
            super().__init__()

    libraries = ("torchvision", "triton", "cv2", "decord", "timm")
    finder = _StubFinder({r for r in libraries if importlib.util.find_spec(r) is None})
    sys.meta_path.append(finder)
    try:
        if "timm" in finder.roots:
            for name in ("timm.layers", "timm.models.layers"):
                layers = importlib.import_module(name)
                layers.DropPath, layers.Mlp, layers.trunc_normal_ = DropPath, Mlp, nn.init.trunc_normal_
        yield
    finally:
        sys.meta_path.remove(finder)
        for name in [n for n in sys.modules if n.split(".")[0] in finder.roots]:
            del sys.modules[name]


class _Placement:
    """A torch function mode: tensors Meta's code puts on ``"cuda"`` by name go to the CPU (and pinning
    host memory, which needs a GPU, is skipped); with
    ``device="meta"``, tensors made from scratch go to the meta device when large (weights) and to the
    CPU when small (drop-path schedules, position-encoding caches Meta's constructors compute with)."""

    def __new__(cls, device: str):
        import torch
        from torch.overrides import TorchFunctionMode

        small = 1 << 16

        class Placement(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                if func is torch.Tensor.pin_memory and not torch.cuda.is_available():
                    return args[0]  # Meta's box encoding pins a host tensor for the GPU copy
                kwargs = dict(kwargs or {})
                if kwargs.get("device", "unset") is None:
                    del kwargs["device"]  # nn.Linear & co. pass device=None: the default device
                if "device" in kwargs and torch.device(kwargs["device"]).type == "cuda":
                    kwargs["device"] = "cpu"
                scratch = not any(isinstance(a, torch.Tensor) for a in args) and "device" not in kwargs
                if device != "meta" or not scratch or not _takes_device(func):
                    return func(*args, **kwargs)
                out = func(*args, **kwargs, device="meta")
                if out.numel() < small:
                    out = func(*args, **kwargs, device="cpu")
                return out

        return Placement()


@dataclass(frozen=True)
class Reduced:
    """A reduced-size SAM 3 both builders make: the released widths (ViT 1024, CLIP 1024, DETR 256, 200
    queries, every head), fewer and smaller where the time goes: ``image_size`` px (a multiple of the
    patch size 14 and of the ViT's pretraining grid 24 x 14), ``window_size`` (so windowed attention still
    cuts the grid into several windows), ``vit_blocks`` of which ``vit_global_blocks`` attend globally
    (Meta's ViT returns the features after its last global block: it must be the last block) and
    ``text_layers`` CLIP layers. The DETR encoder / decoder, geometry encoder and mask decoder are the
    released ones."""

    image_size: int = 336
    window_size: int = 12
    vit_blocks: int = 2
    vit_global_blocks: tuple[int, ...] = (1,)
    text_layers: int = 2

    def meta_vit(self) -> dict:
        if max(self.vit_global_blocks) != self.vit_blocks - 1:
            raise ValueError("the ViT's last block must attend globally (Meta's ViT returns its output)")
        return {
            "img_size": self.image_size,
            "window_size": self.window_size,
            "depth": self.vit_blocks,
            "global_att_blocks": self.vit_global_blocks,
        }

    def hf_config(self):
        """The ``Sam3Config`` of the same model."""
        from transformers import Sam3Config

        config = Sam3Config()
        vit = config.vision_config.backbone_config
        vit.image_size, vit.window_size = self.image_size, self.window_size
        vit.num_hidden_layers, vit.global_attn_indexes = self.vit_blocks, list(self.vit_global_blocks)
        config.text_config.num_hidden_layers = self.text_layers
        return config


def build_meta_image_model(device: str = "meta", reduced: Reduced | None = None):
    """Meta's ``Sam3Image`` (sam3 0.1.4, segmentation head on, no checkpoint: Meta's random
    initialisation) on ``device``: ``"meta"`` gives key names and shapes without memory, ``"cpu"`` a
    real model (3.4 GB at full size). ``reduced``: Meta's own builder with its ``ViT`` and
    ``VETextEncoder`` given these sizes (:class:`Reduced`)."""
    with _stand_ins():
        builder = import_meta("model_builder")
        vit, text = builder.ViT, builder.VETextEncoder
        if reduced is not None:
            overrides = reduced.meta_vit()
            builder.ViT = lambda **kw: vit(**{**kw, **overrides})
            builder.VETextEncoder = lambda **kw: text(**{**kw, "layers": reduced.text_layers})
        try:
            with _Placement(device):
                return builder.build_sam3_image_model(
                    bpe_path=str(clip_bpe_file()), device="cpu", eval_mode=True, load_from_HF=False
                )
        finally:
            builder.ViT, builder.VETextEncoder = vit, text


def randomize_meta_weights(model, seed: int = 0) -> None:
    """Re-draw every weight of a Meta model built without a checkpoint (some of its tensors are
    ``torch.empty`` garbage and its last box / presence layers zero): N(0, 0.02), norms' scales N(1, 0.02)."""
    import torch

    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for name, param in model.named_parameters():
            norm = "norm" in name or ".ln_" in name
            param.normal_(mean=1.0 if norm and name.endswith("weight") else 0.0, std=0.02)


def meta_state_for_import(model) -> dict:
    """Meta's model state in ``sam3.pt``'s layout: ``detector.`` keys next to a tracker key."""
    import torch

    state = {f"detector.{k}": v for k, v in model.state_dict().items()}
    state["tracker.maskmem_tpos_enc"] = torch.zeros(7, 1, 1, 64)
    return state


def import_meta_modules(*modules: str) -> list[types.ModuleType]:
    """``sam3.<module>`` for each name, imported with the stand-ins of :func:`_stand_ins`."""
    with _stand_ins():
        return [import_meta(module) for module in modules]


def meta_predict(model, pixel_values, prompt: str, stages: dict | None = None) -> dict:
    """Meta's inference path for one image and one text prompt (as its ``Sam3Processor`` runs it):
    ``pred_logits`` (1, Q), ``pred_boxes`` (1, Q, 4) cxcywh in [0, 1], ``presence_logit_dec`` (1, 1),
    ``pred_masks`` (1, Q, h, w). ``stages``: filled with the intermediate tensors of the forward in the
    layout of ``tests.model.meta_stages`` (ViT, FPN levels, positions, text, prompt, DETR encoder and
    decoder)."""
    import torch

    data_misc, geometry = import_meta_modules("model.data_misc", "model.geometry_encoders")
    if not hasattr(geometry.torchvision, "__version__"):  # the stand-in: Meta pools boxes even when none
        geometry.torchvision.ops.roi_align = _roi_align_without_boxes
    index = torch.zeros(1, dtype=torch.long)
    find = data_misc.FindStage(
        img_ids=index,
        text_ids=index,
        input_boxes=None,
        input_boxes_mask=None,
        input_boxes_label=None,
        input_points=None,
        input_points_mask=None,
    )
    captured: dict = {}
    hooks = []
    if stages is not None:
        encoder, decoder = model.transformer.encoder, model.transformer.decoder

        def prompt_in(module, args, kwargs):
            captured["prompt"] = (kwargs["prompt"], kwargs["prompt_key_padding_mask"])

        hooks = [
            model.backbone.vision_backbone.trunk.register_forward_hook(
                lambda m, a, out: captured.__setitem__("vit", out[-1])
            ),
            encoder.register_forward_pre_hook(prompt_in, with_kwargs=True),
            encoder.register_forward_hook(lambda m, a, out: captured.__setitem__("encoder", out["memory"])),
            decoder.register_forward_hook(lambda m, a, out: captured.__setitem__("decoder", out[0])),
        ]
    try:
        with torch.inference_mode(), _Placement("cpu"):
            backbone_out = model.backbone.forward_image(pixel_values)
            # the DETR encoder adds pooled text to the FPN tensors in place: keep them as computed
            levels = [level.clone() for level in backbone_out["backbone_fpn"]]
            backbone_out.update(model.backbone.forward_text([prompt], device="cpu"))
            text = backbone_out["language_features"].clone(), backbone_out["language_mask"].clone()
            out = model.forward_grounding(
                backbone_out=backbone_out,
                find_input=find,
                geometric_prompt=model._get_dummy_prompt(),
                find_target=None,
            )
    finally:
        for hook in hooks:
            hook.remove()
    if stages is not None:
        prompt_tokens, prompt_padding = captured["prompt"]
        stages.update(
            vit=captured["vit"],  # (1, C, H, W)
            **{f"fpn_{k}": level for k, level in enumerate(levels)},  # (1, d, h, w), finest first
            positions=backbone_out["vision_pos_enc"][-1],  # (1, d, H, W) of the coarsest level
            text=text[0][:, 0][~text[1][0]],  # valid tokens (n, d); Meta's mask is True at padding
            prompt=prompt_tokens[:, 0][~prompt_padding[0]],  # text + geometry tokens, valid ones (n, d)
            encoder=captured["encoder"].transpose(0, 1),  # (1, H*W, d); Meta's is sequence-first
            decoder=captured["decoder"].transpose(1, 2),  # (layers, 1, Q, d)
        )
    return {
        "pred_logits": out["pred_logits"][..., 0],
        "pred_boxes": out["pred_boxes"],
        "presence_logit_dec": out["presence_logit_dec"].reshape(1, 1),
        "pred_masks": out["pred_masks"],
    }


def _roi_align_without_boxes(features, boxes, output_size):
    """torchvision's ``roi_align`` for the case Meta's text-only forward reaches: no boxes at all."""
    if sum(len(b) for b in boxes):
        raise RuntimeError("box prompts need torchvision's roi_align, which is not installed")
    return features.new_zeros(0, features.shape[1], output_size, output_size)


def _takes_device(func) -> bool:
    name = getattr(func, "__name__", "")
    return name in {"empty", "zeros", "ones", "full", "rand", "randn"}
