"""Test-only: what to do when Meta's ``sam3==0.1.4`` (the parity reference) cannot be used.

Locally the parity tests skip with the reason; CI sets ``SAM3TUNE_REQUIRE_META_SAM3=1`` so that a missing
or broken reference fails the run instead of silently skipping the proof.
"""

import os
from typing import NoReturn

import pytest

REQUIRED = os.environ.get("SAM3TUNE_REQUIRE_META_SAM3") == "1"


def reference_unavailable(reason: str) -> NoReturn:
    """Skip the calling test, or fail it when the reference is required."""
    if REQUIRED:
        pytest.fail(f"{reason} (SAM3TUNE_REQUIRE_META_SAM3=1)", pytrace=False)
    pytest.skip(reason)
