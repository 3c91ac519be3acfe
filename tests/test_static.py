"""The code is ruff-clean, ruff-formatted and mypy --strict clean (the test command proves it)."""

from __future__ import annotations

import pytest

from helpers import run_module as _run

# slow: checks the source tree, run in full by the first run of .ci/run (the installed wheel's run
# leaves the slow tests out)
pytestmark = pytest.mark.slow

_PYTHON = ("src", "tests", "benchmarks", "fuzz", "examples", "setup.py")


def test_ruff_clean() -> None:
    out = _run("ruff", "check", *_PYTHON)
    assert out.returncode == 0, out.stdout + out.stderr


def test_ruff_formatted() -> None:
    out = _run("ruff", "format", "--check", *_PYTHON)
    assert out.returncode == 0, out.stdout + out.stderr


def test_mypy_strict_clean() -> None:
    out = _run("mypy")
    assert out.returncode == 0, out.stdout + out.stderr


def test_generic_user_code_type_checks() -> None:
    """Handles and protocols are precise enough for a user's generic helpers under --strict."""
    out = _run("mypy", "--strict", "tests/typing/generic_user_code.py")
    assert out.returncode == 0, out.stdout + out.stderr
