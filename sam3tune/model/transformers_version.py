"""The transformers releases sam3tune is tested with, checked when ``sam3tune.model`` is imported.

sam3tune runs HF ``Sam3Model``'s parts itself (DETR encoder and decoder layers, the decoder's
``_get_rpb_matrix``, the geometry encoder's CLS path, masking helpers), so a release that renames or
reorders them can break training or change its numbers silently. Outside the tested range the import
fails at once with a message naming the installed version and the range; setting
``SAM3TUNE_ALLOW_UNTESTED_TRANSFORMERS=1`` turns that into a warning (at your own risk).

The oldest, 5.9.0: 5.0-5.3 import torchvision unconditionally in their SAM 3 module (torchvision from
PyPI does not import beside the CPU torch this project pins); 5.4-5.8 keep a deprecated
``cache_position`` branch in ``masking_utils.sdpa_mask`` that breaks the TorchScript ONNX export (on
5.4.0 the model tests pass and 3 TorchScript export tests fail with an IndexError there). The newest:
the latest release the CI has run. ``.ci/run`` runs the suite on the newest and the model and export
tests on the oldest.
"""

from __future__ import annotations

import logging
import os

from packaging.version import Version

from sam3tune.errors import MissingPackageError

log = logging.getLogger(__name__)

OLDEST = "5.9.0"
NEWEST = "5.25.0"
#: the pip requirement of the tested range (pyproject.toml states the same)
REQUIREMENT = f"transformers>={OLDEST},<={NEWEST}"
ALLOW_UNTESTED = "SAM3TUNE_ALLOW_UNTESTED_TRANSFORMERS"


class UnsupportedTransformersError(MissingPackageError):
    """The installed transformers is outside the tested range."""


def check_transformers_version(installed: str | None = None) -> None:
    """Raise :class:`UnsupportedTransformersError` when transformers ``installed`` (default: the imported
    one) is outside ``[OLDEST, NEWEST]``; only warn when ``SAM3TUNE_ALLOW_UNTESTED_TRANSFORMERS=1``."""
    if installed is None:
        import transformers

        installed = transformers.__version__
    version = Version(installed)
    if Version(OLDEST) <= version <= Version(NEWEST):
        return
    message = (
        f"transformers {installed} is outside the range sam3tune is tested with ({OLDEST} to {NEWEST}): "
        "sam3tune runs SAM 3's layers itself and relies on transformers' internals, which change between "
        f"releases. Install a tested release: pip install '{REQUIREMENT}'"
    )
    if os.environ.get(ALLOW_UNTESTED) == "1":
        log.warning("%s (continuing: %s=1)", message, ALLOW_UNTESTED)
        return
    raise UnsupportedTransformersError(f"{message}; or set {ALLOW_UNTESTED}=1 to try it anyway")
