"""Files far beyond what one metadata page can describe."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import mappedpages as mp
from mappedpages.checker import check_file

# slow: a proof, run in full by the first run of .ci/run (the installed wheel's run
# leaves the slow tests out)
pytestmark = pytest.mark.slow

TARGET = (1 << 21) + 1000  # past 2^21 pages of 1 KiB


def test_past_two_million_pages(core: str, path: str) -> None:
    with mp.Pager.create(path, 1024, sync=False, preallocate=False) as p:
        allocated = [int(x) for x in p.alloc_bulk(1 << 20)]
        with p.batch():
            allocated += [int(p.alloc()) for _ in range(1000)]
        allocated += [int(x) for x in p.alloc_bulk(TARGET - len(allocated))]
        assert len(allocated) == TARGET
        assert p.page_count > TARGET
        assert all(p.is_allocated(mp.PageId(i, 1024)) for i in allocated[::997])
        freed = allocated[5::100_000]
        p.free_bulk(mp.PageId(i, 1024) for i in freed)
    expected = sorted(set(allocated) - set(freed))
    with mp.Pager.open(path, sync=False) as p:
        found = [int(x) for x in p.iter_allocated_pages()]
        assert found == expected
        internal = check_file(path, mp.crc32c).internal_pages  # pages 0-2 and tree blocks
        assert p.page_count - p.free_page_count == len(expected) + internal
        # the holes are reused, lowest first (among them a few pages that held tree blocks
        # before a checkpoint wrote new ones)
        again = [int(x) for x in p.alloc_bulk(len(freed) + 64)]
        assert again == sorted(again) and not set(again) & set(expected)
        assert set(freed) <= set(again)
    out = subprocess.run(
        [sys.executable, "-m", "mappedpages", "check", path],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "MAPPEDPAGES_CORE": core},
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "OK" in out.stdout


PROTECTED = 1 << 20


def test_a_million_protected_pages_on_1k_pages(core: str, path: str) -> None:
    """2^20 protected pages (format 1 stopped at 3,600 with 1 KiB pages) survive a reopen."""
    with mp.Pager.create(path, 1024, sync=False, preallocate=False) as p:
        ids = p.alloc_protected_bulk(PROTECTED // 2)
        with p.batch():
            ids += [p.alloc_protected() for _ in range(1000)]
        ids += p.alloc_protected_bulk(PROTECTED - len(ids))
        for x in ids[:: PROTECTED // 64]:
            with x.get_mut(p) as w:
                w.page_mut()[:8] = int(x).to_bytes(8, "little")
    with mp.Pager.open(path, sync=False) as p:
        assert p.protected.pager is p
        found = list(p.iter_allocated_protected_pages())
        assert found == [mp.ProtectedPageId(i, 1024) for i in range(PROTECTED)]
        for x in ids[:: PROTECTED // 64]:
            assert bytes(p.get_protected_page(x)[:8]) == int(x).to_bytes(8, "little")
        assert bytes(p.get_protected_page(ids[-1])) == bytes(1024)
        p.free_protected(ids[12345])
        assert p.alloc_protected() == ids[12345]  # the lowest free slot, among a million
    report = check_file(path, mp.crc32c)
    assert report.ok and report.protected_pages == PROTECTED
