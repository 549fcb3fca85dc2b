"""TEST-ONLY: Meta's ``sam3==0.1.4`` modules and CLIP's BPE file as references for the model tests.

``sam3/__init__.py`` is not executed (it builds the whole model zoo); ``iopath`` (used by Meta's
tokenizer only to open a file) gets a stand-in that opens local paths.
"""

from __future__ import annotations

import builtins
import importlib
import importlib.util
import sys
import types
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
    if importlib.util.find_spec("iopath") is None and "iopath.common.file_io" not in sys.modules:
        file_io = types.ModuleType("iopath.common.file_io")
        file_io.g_pathmgr = types.SimpleNamespace(open=builtins.open)
        for name in ("iopath", "iopath.common"):
            sys.modules.setdefault(name, types.ModuleType(name))
        sys.modules["iopath.common.file_io"] = file_io
    try:
        return importlib.import_module(f"sam3.{module}")
    except ImportError as err:
        reference_unavailable(f"Meta's sam3.{module} is not importable here: {err}")
