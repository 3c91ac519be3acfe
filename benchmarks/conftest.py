"""Benchmark fixtures: each case runs on the C core and on the pure-Python core."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from mappedpages import _backend


@pytest.fixture(params=["c", "python"])
def core(request: pytest.FixtureRequest) -> Iterator[str]:
    with _backend.using(request.param):
        yield request.param


@pytest.fixture
def path(tmp_path: Path) -> str:
    return os.fspath(tmp_path / "bench.mp")


@pytest.fixture(scope="session")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A file of more than 2^21 pages of 1 KiB, almost all in use (written once per session)."""
    import mappedpages as mp

    path = os.fspath(tmp_path_factory.mktemp("big") / "big.mp")
    with mp.Pager.create(path, 1024, sync=False, preallocate=False) as p:
        p.alloc_bulk(1 << 21)
    return path


@pytest.fixture(scope="session")
def big_protected(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A 1 KiB-page file of more than 2^21 pages, 2^20 of them protected (once per session)."""
    from mappedpages import bench_snapshots

    return bench_snapshots.big_file(os.fspath(tmp_path_factory.mktemp("bigp") / "big.mp"))
