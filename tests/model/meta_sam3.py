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
    """A torch function mode: tensors Meta's code puts on ``"cuda"`` by name go to the CPU; with
    ``device="meta"``, tensors made from scratch go to the meta device when large (weights) and to the
    CPU when small (drop-path schedules, position-encoding caches Meta's constructors compute with)."""

    def __new__(cls, device: str):
        import torch
        from torch.overrides import TorchFunctionMode

        small = 1 << 16

        class Placement(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
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


def build_meta_image_model(device: str = "meta"):
    """Meta's ``Sam3Image`` (sam3 0.1.4, segmentation head on, no checkpoint: Meta's random
    initialisation) on ``device``: ``"meta"`` gives key names and shapes without memory, ``"cpu"`` a
    real model (3.4 GB at full size)."""
    with _stand_ins():
        builder = import_meta("model_builder")
        with _Placement(device):
            return builder.build_sam3_image_model(
                bpe_path=str(clip_bpe_file()), device="cpu", eval_mode=True, load_from_HF=False
            )


def import_meta_modules(*modules: str) -> list[types.ModuleType]:
    """``sam3.<module>`` for each name, imported with the stand-ins of :func:`_stand_ins`."""
    with _stand_ins():
        return [import_meta(module) for module in modules]


def meta_predict(model, pixel_values, prompt: str) -> dict:
    """Meta's inference path for one image and one text prompt (as its ``Sam3Processor`` runs it):
    ``pred_logits`` (1, Q), ``pred_boxes`` (1, Q, 4) cxcywh in [0, 1], ``presence_logit_dec`` (1, 1)."""
    import torch

    data_misc = import_meta("model.data_misc")
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
    with torch.inference_mode(), _Placement("cpu"):
        backbone_out = model.backbone.forward_image(pixel_values)
        backbone_out.update(model.backbone.forward_text([prompt], device="cpu"))
        out = model.forward_grounding(
            backbone_out=backbone_out,
            find_input=find,
            geometric_prompt=model._get_dummy_prompt(),
            find_target=None,
        )
    return {
        "pred_logits": out["pred_logits"][..., 0],
        "pred_boxes": out["pred_boxes"],
        "presence_logit_dec": out["presence_logit_dec"].reshape(1, 1),
    }


def _takes_device(func) -> bool:
    name = getattr(func, "__name__", "")
    return name in {"empty", "zeros", "ones", "full", "rand", "randn"}
