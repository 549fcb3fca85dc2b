"""transformers outside the tested range fails early, naming the installed version and the range."""

from __future__ import annotations

import subprocess
import sys

import pytest
import transformers

from sam3tune.model.transformers_version import (
    ALLOW_UNTESTED,
    NEWEST,
    OLDEST,
    UnsupportedTransformersError,
    check_transformers_version,
)


def test_this_environment_is_in_the_tested_range():
    check_transformers_version()  # the suite itself runs on a tested release
    check_transformers_version(transformers.__version__)


@pytest.mark.parametrize("version", ["5.8.0", "4.57.1", "5.26.0", "6.0.0", "5.26.0.dev0"])
def test_untested_releases_are_refused_naming_version_and_range(version, monkeypatch):
    monkeypatch.delenv(ALLOW_UNTESTED, raising=False)
    with pytest.raises(UnsupportedTransformersError) as caught:
        check_transformers_version(version)
    message = str(caught.value)
    assert (
        f"transformers {version} is outside the range sam3tune is tested with ({OLDEST} to {NEWEST})"
        in message
    )
    assert f"pip install 'transformers>={OLDEST},<={NEWEST}'" in message and ALLOW_UNTESTED in message


@pytest.mark.parametrize("version", [OLDEST, "5.10.1", NEWEST])
def test_tested_releases_pass(version):
    check_transformers_version(version)


def test_the_escape_hatch_only_warns(monkeypatch, caplog):
    monkeypatch.setenv(ALLOW_UNTESTED, "1")
    check_transformers_version("5.99.0")
    assert "transformers 5.99.0 is outside the range" in caplog.text


def test_the_command_refuses_before_loading_anything(tmp_path):
    """Importing sam3tune.model checks first: the command prints one message and exits 2."""
    code = (
        "import sys, transformers; transformers.__version__ = '5.99.0'; "
        "from sam3tune.cli import main; sys.exit(main(['predict', '--model', 'tiny', '--prompt', 'x', "
        f"'--out', {str(tmp_path / 'out')!r}, {str(tmp_path)!r}]))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert "transformers 5.99.0 is outside the range sam3tune is tested with" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()
