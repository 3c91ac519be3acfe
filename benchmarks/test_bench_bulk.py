"""Bulk calls, iteration, opening and checking a big file, CRC32C: both cores, and peers."""

from __future__ import annotations

import os
import shutil

import pytest

import mappedpages as mp
from mappedpages import _backend
from mappedpages.checker import check_file


@pytest.mark.parametrize("n", [10, 1000, 100_000])
def test_alloc_bulk_free_bulk_durable(benchmark, core: str, path: str, n: int) -> None:  # type: ignore[no-untyped-def]
    benchmark.group = f"alloc_bulk+free_bulk({n}), durable"
    with mp.Pager.create(path, 4096, sync=True) as p:
        p.free_bulk(p.alloc_bulk(n))  # the file has grown once: measure the calls, not growth

        def both() -> None:
            p.free_bulk(p.alloc_bulk(n))

        benchmark.pedantic(both, rounds=20 if n == 100_000 else 100, warmup_rounds=2)


@pytest.mark.benchmark(group="get_page_mut (1000 reads)")
def test_get_page_mut(benchmark, core: str, path: str) -> None:  # type: ignore[no-untyped-def]
    with mp.Pager.create(path, 4096, sync=False) as p:
        ids = p.alloc_bulk(1000)
        get = p.get_page_mut

        def reads() -> None:
            for pid in ids:
                get(pid)

        benchmark(reads)


@pytest.mark.benchmark(group="iterate 1M allocated pages")
def test_iterate_a_million(benchmark, core: str, path: str) -> None:  # type: ignore[no-untyped-def]
    with mp.Pager.create(path, 1024, sync=False, preallocate=False) as p:
        p.alloc_bulk(1_000_000)
        benchmark.pedantic(lambda: sum(1 for _ in p.iter_allocated_pages()), rounds=3)


@pytest.mark.benchmark(group="open a 2^21-page file")
def test_open_big(benchmark, core: str, path: str, big_file: str) -> None:  # type: ignore[no-untyped-def]
    shutil.copyfile(big_file, path)

    def reopen() -> None:
        mp.Pager.open(path, sync=False).close()

    benchmark.pedantic(reopen, rounds=5)


@pytest.mark.benchmark(group="check a 2^21-page file")
def test_check_big(benchmark, core: str, big_file: str) -> None:  # type: ignore[no-untyped-def]
    crc = _backend.CORE.crc32c
    report = benchmark.pedantic(lambda: check_file(big_file, crc), rounds=3)
    assert report.ok


def _crc_functions() -> dict[str, object]:
    out: dict[str, object] = {}
    try:
        import google_crc32c

        out["google-crc32c"] = google_crc32c.value
    except ImportError:
        pass
    try:
        import crc32c

        out["crc32c"] = crc32c.crc32c
    except ImportError:
        pass
    return out


@pytest.mark.parametrize("size", [4096, 1 << 20], ids=["4KiB", "1MiB"])
def test_crc32c(benchmark, core: str, size: int) -> None:  # type: ignore[no-untyped-def]
    benchmark.group = f"crc32c {size} bytes"
    data = os.urandom(size)
    benchmark(_backend.CORE.crc32c, data)


@pytest.mark.parametrize("peer", sorted(_crc_functions()))
@pytest.mark.parametrize("size", [4096, 1 << 20], ids=["4KiB", "1MiB"])
def test_crc32c_peer(benchmark, peer: str, size: int) -> None:  # type: ignore[no-untyped-def]
    benchmark.group = f"crc32c {size} bytes"
    data = os.urandom(size)
    benchmark(_crc_functions()[peer], data)
