"""The durable copy-on-write step (bench_cow.py): 16 new pages written and synced, a protected
root switched, the old 16 freed, in one batch; and the same transaction in LMDB and SQLite.
Compare the groups' medians with the floor group's (test_bench_floor.py) of the same run."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import pytest

from mappedpages.bench_cow import lmdb_step, mappedpages_step, sqlite_step


@pytest.mark.benchmark(group="copy-on-write step")
def test_cow_step_mappedpages(benchmark, core: str, path: str) -> None:  # type: ignore[no-untyped-def]
    with mappedpages_step(os.path.dirname(path)) as step:
        benchmark.pedantic(step, rounds=200, warmup_rounds=5)


@pytest.mark.benchmark(group="copy-on-write step")
def test_cow_step_lmdb(benchmark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    try:
        lmdb = importlib.import_module("lmdb")
    except ImportError:
        pytest.skip("lmdb is not installed (pip install '.[bench]')")
    with lmdb_step(os.fspath(tmp_path), lmdb) as step:
        benchmark.pedantic(step, rounds=200, warmup_rounds=5)


@pytest.mark.benchmark(group="copy-on-write step")
def test_cow_step_sqlite_wal_full(benchmark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with sqlite_step(os.fspath(tmp_path)) as step:
        benchmark.pedantic(step, rounds=200, warmup_rounds=5)
