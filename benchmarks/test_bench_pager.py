"""Pager costs, C core against pure-Python core (``pytest benchmarks --benchmark-enable``).

Compare the groups side by side: each group holds one operation on both cores.
"""

from __future__ import annotations

import mmap

import pytest

import mappedpages as mp


@pytest.mark.benchmark(group="durable alloc: fresh file")
def test_durable_alloc_fresh(benchmark, core: str, path: str) -> None:  # type: ignore[no-untyped-def]
    with mp.Pager.create(path, 1024, sync=True) as p:
        benchmark.pedantic(p.alloc, rounds=1000, warmup_rounds=20)


@pytest.mark.benchmark(group="durable alloc: 2^21-page file")
def test_durable_alloc_big(benchmark, core: str, big_file: str) -> None:  # type: ignore[no-untyped-def]
    # the session's file itself, not a copy: copying 2 GiB leaves the disk busy with work that
    # has nothing to do with the allocation measured (each case adds ~1,000 pages to the file)
    with mp.Pager.open(big_file, sync=True, preallocate=False) as p:
        benchmark.pedantic(p.alloc, rounds=1000, warmup_rounds=20)


@pytest.mark.benchmark(group="alloc+free in batch (1000 pairs)")
def test_alloc_free_in_batch(benchmark, core: str, path: str) -> None:  # type: ignore[no-untyped-def]
    with mp.Pager.create(path, 4096, sync=True) as p:
        p.alloc_bulk(5000)
        alloc, free = p.alloc, p.free

        def pairs() -> None:
            for _ in range(1000):
                free(alloc())

        with p.batch():
            benchmark(pairs)


@pytest.mark.benchmark(group="alloc+free sync=False (1000 pairs)")
def test_alloc_free_nosync(benchmark, core: str, path: str) -> None:  # type: ignore[no-untyped-def]
    with mp.Pager.create(path, 4096, sync=False) as p:
        p.alloc_bulk(5000)
        alloc, free = p.alloc, p.free

        def pairs() -> None:
            for _ in range(1000):
                free(alloc())

        benchmark(pairs)


@pytest.mark.benchmark(group="get_page (1000 reads)")
def test_get_page(benchmark, core: str, path: str) -> None:  # type: ignore[no-untyped-def]
    with mp.Pager.create(path, 4096, sync=False) as p:
        ids = p.alloc_bulk(1000)
        get = p.get_page

        def reads() -> None:
            for pid in ids:
                get(pid)

        benchmark(reads)


@pytest.mark.benchmark(group="crc32c 4 KiB")
def test_crc32c_4k(benchmark, core: str) -> None:  # type: ignore[no-untyped-def]
    from mappedpages import _backend

    data = bytes(range(256)) * 16
    benchmark(_backend.CORE.crc32c, data)


@pytest.mark.benchmark(group="durable flush of 64 dirty 1 KiB pages (floor: test_bench_floor)")
@pytest.mark.parametrize("which", ["ids", "all"])
def test_flush_64_dirty(benchmark, core: str, path: str, which: str) -> None:  # type: ignore[no-untyped-def]
    with mp.Pager.create(path, 1024, sync=True) as p:
        ids = p.alloc_bulk(64)
        views = [p.get_page_mut(pid) for pid in ids]
        arg = ids if which == "ids" else None

        def flush() -> None:
            for v in views:
                v[0] = (v[0] + 1) & 0xFF
            p.flush(arg)

        benchmark.pedantic(flush, rounds=300, warmup_rounds=10)
        for v in views:
            v.release()


@pytest.mark.benchmark(group="a page from a stored number (1000 reads)")
@pytest.mark.parametrize("how", ["memoryview slice of an mmap", "get_page(handle)", "rebuilt"])
def test_get_page_from_number(benchmark, core: str, path: str, how: str) -> None:  # type: ignore[no-untyped-def]
    with mp.Pager.create(path, 4096, sync=False) as p:
        ids = p.alloc_bulk(1000)
        numbers = [int(pid) for pid in ids]
        get, page_id = p.get_page, mp.PageId
        view = memoryview(mmap.mmap(-1, (max(numbers) + 1) * 4096))

        def slices() -> None:
            for n in numbers:
                view[n * 4096 : n * 4096 + 4096]

        def handles() -> None:
            for pid in ids:
                get(pid)

        def rebuilt() -> None:
            for n in numbers:
                get(page_id(n, 4096))

        benchmark(
            {"memoryview slice of an mmap": slices, "get_page(handle)": handles}.get(how, rebuilt)
        )


@pytest.mark.benchmark(group="PageId(n, page_size) (1000 handles)")
def test_page_id_from_number(benchmark) -> None:  # type: ignore[no-untyped-def]
    page_id = mp.PageId

    def build() -> None:
        for n in range(1000):
            page_id(n, 4096)

    benchmark(build)
