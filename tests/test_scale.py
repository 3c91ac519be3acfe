"""Files far beyond what one metadata page can describe."""

from __future__ import annotations

import os
import subprocess
import sys

import mappedpages as mp
from mappedpages.format import Geometry

TARGET = (1 << 21) + 1000  # past 2^21 pages of 1 KiB


def test_past_two_million_pages(core: str, path: str) -> None:
    geo = Geometry(1024)
    with mp.Pager.create(path, 1024, sync=False, preallocate=False) as p:
        allocated = [int(x) for x in p.alloc_bulk(1 << 20)]
        with p.batch():
            allocated += [int(p.alloc()) for _ in range(1000)]
        allocated += [int(x) for x in p.alloc_bulk(TARGET - len(allocated))]
        assert len(allocated) == TARGET
        assert p.page_count > TARGET
        assert not any(geo.is_internal(i) for i in allocated[::997])
        freed = allocated[5::100_000]
        p.free_bulk(mp.PageId(i, 1024) for i in freed)
    expected = sorted(set(allocated) - set(freed))
    with mp.Pager.open(path, sync=False) as p:
        found = [int(x) for x in p.iter_allocated_pages()]
        assert found == expected
        assert p.page_count - p.free_page_count == len(expected) + 3 + 2 * (
            geo.group_count(p.page_count) - 1
        )
        again = p.alloc_bulk(len(freed))  # the holes are reused, lowest first
        assert [int(x) for x in again] == sorted(freed)
    out = subprocess.run(
        [sys.executable, "-m", "mappedpages", "check", path],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "MAPPEDPAGES_CORE": core},
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "OK" in out.stdout
