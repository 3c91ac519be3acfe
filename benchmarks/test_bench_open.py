"""Opening a large file whose pages are not in the page cache (``pytest benchmarks
--benchmark-enable``); ``benchmarks/open_scale.py`` does the same at 2^24 and 2^26 pages, cold,
with the resident memory and page-cache growth."""

from __future__ import annotations

import pytest

import mappedpages as mp
from mappedpages.bench import evict


@pytest.mark.benchmark(group="Pager.open, 2^21-page file, not in the page cache")
def test_open_not_cached(benchmark, core: str, big_file: str) -> None:  # type: ignore[no-untyped-def]
    def open_close() -> None:
        with mp.Pager.open(big_file, sync=False, preallocate=False):
            pass

    benchmark.pedantic(open_close, setup=lambda: evict(big_file), rounds=10)


@pytest.mark.benchmark(group="ReadOnlyPager.open, 2^21-page file, not in the page cache")
def test_reader_open_not_cached(benchmark, core: str, big_file: str) -> None:  # type: ignore[no-untyped-def]
    def open_close() -> None:
        with mp.ReadOnlyPager.open(big_file):
            pass

    benchmark.pedantic(open_close, setup=lambda: evict(big_file), rounds=10)
