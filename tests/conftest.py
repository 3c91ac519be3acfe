"""Shared fixtures: every test that takes ``core`` (or ``pager``) runs on both cores."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import mappedpages as mp
from mappedpages import _backend

# Both cores, always: a C core that failed to build makes every C-core test fail, not skip.
CORES = ["c", "python"]


@pytest.fixture(params=CORES)
def core(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run the test on the C core and on the pure-Python core."""
    with _backend.using(request.param):
        yield request.param


@pytest.fixture
def path(tmp_path: Path) -> str:
    return os.fspath(tmp_path / "pages.mp")


@pytest.fixture
def pager(core: str, path: str) -> Iterator[mp.Pager]:
    p = mp.Pager.create(path, 1024, sync=False)
    try:
        yield p
    finally:
        p.close()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    from helpers import COUNTS

    if COUNTS:
        terminalreporter.section("what the proofs checked")
        for what, n in sorted(COUNTS.items()):
            terminalreporter.write_line(f"{what}: {n}")
