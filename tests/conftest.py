"""Shared fixtures: every test that takes ``core`` (or ``pager``) runs on both cores."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import mappedpages as mp
from mappedpages import _backend

CORES = ["c", "python"]


@pytest.fixture(params=CORES)
def core(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run the test on the C core and on the pure-Python core (a missing C core fails)."""
    previous = _backend.CORE
    _backend.use(request.param)
    try:
        yield request.param
    finally:
        _backend.CORE = previous


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
