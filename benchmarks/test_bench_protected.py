"""Protected pages and sub-pages on both cores, and LMDB's durable put beside them."""

from __future__ import annotations

import os

import pytest

import mappedpages as mp


@pytest.mark.benchmark(group="protected write + commit (4 KiB, durable)")
def test_protected_write_commit(benchmark, core: str, path: str) -> None:  # type: ignore[no-untyped-def]
    record = os.urandom(4096)
    with mp.Pager.create(path, 4096, sync=True) as p:
        ppid = p.alloc_protected()

        def replace() -> None:
            with ppid.get_mut(p) as w:
                w.page_mut()[:] = record

        benchmark.pedantic(replace, rounds=500, warmup_rounds=10)


@pytest.mark.benchmark(group="protected write + commit (4 KiB, durable)")
def test_lmdb_durable_put(benchmark, tmp_path) -> None:  # type: ignore[no-untyped-def]
    lmdb = pytest.importorskip("lmdb")
    env = lmdb.open(str(tmp_path / "lmdb"), map_size=1 << 30, sync=True, metasync=True)
    value = os.urandom(4096)

    def put() -> None:
        with env.begin(write=True) as txn:
            txn.put(b"record", value)

    benchmark.pedantic(put, rounds=500, warmup_rounds=10)
    env.close()


@pytest.mark.benchmark(group="alloc_protected (durable)")
def test_alloc_protected(benchmark, core: str, path: str) -> None:  # type: ignore[no-untyped-def]
    with mp.Pager.create(path, 4096, sync=True) as p:
        p.free_protected_bulk(p.alloc_protected_bulk(600))  # directory blocks made, file grown
        benchmark.pedantic(p.alloc_protected, rounds=500, warmup_rounds=5)


@pytest.mark.benchmark(group="sub-page alloc+free (1000 pairs, sync=False)")
def test_subpage_alloc_free(benchmark, core: str, path: str) -> None:  # type: ignore[no-untyped-def]
    with mp.Pager.create(path, 4096, sync=False) as p:
        sub = mp.SubPageAllocator(p, 256)
        keep = [sub.alloc() for _ in range(100)]
        alloc, free = sub.alloc, sub.free

        def pairs() -> None:
            for _ in range(1000):
                free(alloc())

        benchmark(pairs)
        assert len(keep) == 100


@pytest.mark.benchmark(group="zero-copy get (1000 reads)")
def test_lmdb_zero_copy_get(benchmark, tmp_path) -> None:  # type: ignore[no-untyped-def]
    lmdb = pytest.importorskip("lmdb")
    env = lmdb.open(str(tmp_path / "lmdb"), map_size=1 << 30)
    keys = [i.to_bytes(8, "big") for i in range(1000)]
    with env.begin(write=True) as txn:
        for k in keys:
            txn.put(k, bytes(4096))
    with env.begin(buffers=True) as txn:
        get = txn.get

        def reads() -> None:
            for k in keys:
                get(k)

        benchmark(reads)
    env.close()
