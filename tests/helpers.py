"""Helpers shared by the tests."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import mappedpages as mp
from mappedpages.checker import Report, check_file

State = tuple[list[int], list[tuple[int, int]]]


def pager_state(p: mp.Pager) -> State:
    """Regular pages in use, and each protected page with a checksum of its content."""
    regular = [int(x) for x in p.iter_allocated_pages()]
    protected = [
        (int(x), mp.crc32c(p.get_protected_page(x))) for x in p.iter_allocated_protected_pages()
    ]
    return regular, protected


def check_ok(path: str) -> Report:
    """Assert that the independent checker finds the file sound, and return its report."""
    report = check_file(path, mp.crc32c)
    assert report.ok, report.problems
    return report


# What the proofs counted in this run (crash images, SIGKILLs, hostile inputs); conftest.py
# prints it at the end of the session, so every CI log states it.
COUNTS: dict[str, int] = {}


def count(what: str, n: int = 1) -> None:
    COUNTS[what] = COUNTS.get(what, 0) + n


# -- the static tools ------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent


def run_module(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m args...`` in the source tree (so that pyproject.toml configures ruff and
    mypy), with its output captured."""
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


def mypy_strict(files: Sequence[Path]) -> dict[Path, list[tuple[int, str]]]:
    """Run ``mypy --strict`` once over ``files``; each file's errors as (line, error code).

    Raises AssertionError when mypy itself fails (a crash, a file it cannot read), so that a
    broken run is never taken for a clean one.
    """
    # a cache of its own: mypy's shared one, holding a module of the same name from another
    # directory (an earlier run's tmp_path), reports that file's errors under its old path
    with tempfile.TemporaryDirectory() as cache:
        out = run_module(
            "mypy",
            "--strict",
            "--show-error-codes",
            "--no-error-summary",
            "--no-pretty",
            "--cache-dir",
            cache,
            *map(str, files),
        )
    assert out.returncode in (0, 1), out.stdout + out.stderr
    found: dict[Path, list[tuple[int, str]]] = {(ROOT / f).resolve(): [] for f in files}
    for line in out.stdout.splitlines():
        where, sep, rest = line.partition(": error: ")
        if not sep:
            continue  # notes belong to the error before them
        name, _, number = where.rpartition(":")
        code = rest.rsplit("[", 1)[-1].rstrip("]") if rest.endswith("]") else ""
        found.setdefault((ROOT / name).resolve(), []).append((int(number), code))
    assert out.returncode == (1 if any(found.values()) else 0), out.stdout + out.stderr
    return found
