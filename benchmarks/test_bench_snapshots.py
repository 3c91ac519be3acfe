"""What snapshots cost (``pytest benchmarks --benchmark-enable``): compare within each group.

- a durable commit with 8 reader processes refreshing continuously, and without them;
- refresh() that finds nothing new;
- refresh() after one commit, on a fresh file and on one of 2^21 pages (2^20 protected);
- alloc_protected() on a fresh file and with 2^20 protected pages in the directory.
"""

from __future__ import annotations

import os

import pytest

import mappedpages as mp
from mappedpages.bench_snapshots import reader_load


@pytest.mark.benchmark(group="durable protected write + commit, 8 readers refreshing or none")
@pytest.mark.parametrize("readers", [0, 8])
def test_commit_under_readers(benchmark, core: str, path: str, readers: int) -> None:  # type: ignore[no-untyped-def]
    record = os.urandom(4096)
    with mp.Pager.create(path, 4096, sync=True) as p:
        ppid = p.alloc_protected()

        def replace() -> None:
            with ppid.get_mut(p) as w:
                w.page_mut()[:] = record

        if not readers:
            benchmark.pedantic(replace, rounds=500, warmup_rounds=10)
            return
        with reader_load(path, core, ppid, readers) as load:
            load.set_active(True)
            benchmark.pedantic(replace, rounds=500, warmup_rounds=10)
            assert load.refreshes() > 0


@pytest.mark.benchmark(group="refresh(), nothing new")
def test_refresh_nothing_new(benchmark, core: str, path: str) -> None:  # type: ignore[no-untyped-def]
    with mp.Pager.create(path, 1024, sync=False) as p:
        p.alloc_protected()
    with mp.ReadOnlyPager.open(path) as r:
        benchmark(r.refresh)


def _refresh_after_commit(benchmark, path: str) -> None:  # type: ignore[no-untyped-def]
    with (
        mp.Pager.open(path, sync=False, preallocate=False) as w,
        mp.ReadOnlyPager.open(path) as r,
    ):
        ppid = w.alloc_protected()
        n = [0]

        def commit() -> None:
            n[0] += 1
            with ppid.get_mut(w) as m:
                m.page_mut()[:8] = n[0].to_bytes(8, "little")

        benchmark.pedantic(r.refresh, setup=commit, rounds=500)
        w.free_protected(ppid)


@pytest.mark.benchmark(group="refresh() after one commit: fresh or 2^21-page file")
def test_refresh_after_commit_fresh(benchmark, core: str, path: str) -> None:  # type: ignore[no-untyped-def]
    mp.Pager.create(path, 1024, sync=False).close()
    _refresh_after_commit(benchmark, path)


@pytest.mark.benchmark(group="refresh() after one commit: fresh or 2^21-page file")
def test_refresh_after_commit_big(benchmark, core: str, big_protected: str) -> None:  # type: ignore[no-untyped-def]
    _refresh_after_commit(benchmark, big_protected)


@pytest.mark.benchmark(group="alloc_protected (sync=False): fresh or 2^20 protected")
def test_alloc_protected_fresh(benchmark, core: str, path: str) -> None:  # type: ignore[no-untyped-def]
    with mp.Pager.create(path, 1024, sync=False) as p:
        p.free_protected_bulk(p.alloc_protected_bulk(2000))  # grown once
        got: list[mp.ProtectedPageId] = []
        benchmark.pedantic(lambda: got.append(p.alloc_protected()), rounds=2000)
        p.free_protected_bulk(got)


@pytest.mark.benchmark(group="alloc_protected (sync=False): fresh or 2^20 protected")
def test_alloc_protected_full(benchmark, core: str, big_protected: str) -> None:  # type: ignore[no-untyped-def]
    with mp.Pager.open(big_protected, sync=False, preallocate=False) as p:
        got: list[mp.ProtectedPageId] = []
        benchmark.pedantic(lambda: got.append(p.alloc_protected()), rounds=2000)
        p.free_protected_bulk(got)
