"""The floor every durable operation stands on, on the file system of the benchmark files.

Durable mappedpages calls are compared with these (README, "Performance"): a commit costs two
barriers, so its floor is twice the single-page msync.
"""

from __future__ import annotations

import mmap
import os

import pytest


@pytest.fixture
def mapped(path: str):  # type: ignore[no-untyped-def]
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.ftruncate(fd, 1 << 20)
    m = mmap.mmap(fd, 1 << 20)
    m[:] = bytes(1 << 20)
    m.flush()
    yield fd, m
    m.close()
    os.close(fd)


@pytest.mark.benchmark(group="floor")
def test_floor_msync_one_page(benchmark, mapped) -> None:  # type: ignore[no-untyped-def]
    _, m = mapped

    def one() -> None:
        m[100] = (m[100] + 1) & 0xFF
        m.flush(0, mmap.PAGESIZE)

    benchmark.pedantic(one, rounds=500, warmup_rounds=10)


@pytest.mark.benchmark(group="floor")
def test_floor_pwrite_fdatasync_one_page(benchmark, mapped) -> None:  # type: ignore[no-untyped-def]
    fd, _ = mapped
    page = bytes(4096)

    def one() -> None:
        os.pwrite(fd, page, 8192)
        os.fdatasync(fd)

    benchmark.pedantic(one, rounds=500, warmup_rounds=10)
