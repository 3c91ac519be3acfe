"""The floor every durable operation stands on, on the file system of the benchmark files.

Durable mappedpages calls are compared with these (README, "Performance"): a commit costs two
barriers, so its floor is twice the single-page msync. ``mappedpages bench`` times the same
``Floor``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from mappedpages.bench import Floor


@pytest.fixture
def floor(path: str) -> Iterator[Floor]:
    f = Floor(os.path.dirname(path))
    yield f
    f.close()


@pytest.mark.benchmark(group="floor")
def test_floor_msync_one_page(benchmark, floor: Floor) -> None:  # type: ignore[no-untyped-def]
    benchmark.pedantic(floor.msync, rounds=500, warmup_rounds=10)


@pytest.mark.benchmark(group="floor")
def test_floor_pwrite_fdatasync_one_page(benchmark, floor: Floor) -> None:  # type: ignore[no-untyped-def]
    benchmark.pedantic(floor.write_sync, rounds=500, warmup_rounds=10)
