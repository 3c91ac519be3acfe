"""The code is ruff-clean and mypy --strict clean (so the test command alone proves it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


def test_ruff_clean() -> None:
    out = _run("ruff", "check", "src", "tests", "benchmarks", "fuzz", "examples")
    assert out.returncode == 0, out.stdout + out.stderr


def test_mypy_strict_clean() -> None:
    out = _run("mypy")
    assert out.returncode == 0, out.stdout + out.stderr


def test_generic_user_code_type_checks() -> None:
    """Handles and protocols are precise enough for a user's generic helpers under --strict."""
    out = _run("mypy", "--strict", "tests/typing/generic_user_code.py")
    assert out.returncode == 0, out.stdout + out.stderr
