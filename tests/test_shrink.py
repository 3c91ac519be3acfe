"""pager.shrink(): the free pages at the end of the file go back to the file system, in one
commit (two when protected pages or tree blocks had to move down first); page numbers never
change, and pages a snapshot may still read stay."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

import mappedpages as mp
from helpers import check_ok, pager_state

PS = 4096


def _disk(path: str) -> int:
    """Bytes the file takes on disk."""
    return os.stat(path).st_blocks * 512


def _fill(p: mp.Pager, ids: list[mp.PageId]) -> None:
    for pid in ids:
        p.get_page_mut(pid)[:8] = int(pid).to_bytes(8, "little")


def _intact(p: mp.PageReader, ids: list[mp.PageId]) -> bool:
    return all(bytes(p.get_page(pid)[:8]) == int(pid).to_bytes(8, "little") for pid in ids)


def test_a_large_free_gives_the_space_back(core: str, path: str) -> None:
    """A 1 GiB sparse file whose last half is freed: its size and its disk usage fall, every
    kept page and protected page reads as before, and the file reopens and checks clean."""
    with mp.Pager.create(path, PS, sync=False, preallocate=False) as p:
        ids = p.alloc_bulk((1 << 30) // PS - 3)
        written = ids[::16]  # one page in 16 holds data: the rest stay holes
        _fill(p, written)
        prot = p.alloc_protected_bulk(20)  # made last: at the end of the file, so they move
        for i, ppid in enumerate(prot):
            with ppid.get_mut(p) as w:
                w.page_mut()[:4] = i.to_bytes(4, "little")
        half = len(ids) // 2
        p.free_bulk(ids[half:])
        p.flush()
        size, disk, state = os.path.getsize(path), _disk(path), pager_state(p)
        lost = p.shrink()
        assert lost > 0 and p.page_count * PS == os.path.getsize(path) == size - lost * PS
        assert os.path.getsize(path) < size * 0.55  # the last half is gone
        assert _disk(path) < disk * 0.6
        assert pager_state(p) == state
        assert _intact(p, [x for x in written if x < ids[half]])
        assert [bytes(p.get_protected_page(x)[:4]) for x in prot] == [
            i.to_bytes(4, "little") for i in range(20)
        ]
        # what is left: at most the blocks the last checkpoint freed, pending then
        assert p.shrink() < 8
        grown = p.alloc_bulk(100)  # and it grows again as ever
        _fill(p, grown)
        state = pager_state(p)
    check_ok(path)
    with mp.Pager.open(path) as p:
        assert pager_state(p) == state and _intact(p, grown)


def test_pages_a_snapshot_reads_stay_until_it_closes(core: str, path: str) -> None:
    with mp.Pager.create(path, 1024, sync=False) as p:
        ids = p.alloc_bulk(4000)
        _fill(p, ids)
        snap = p.snapshot()
        p.free_bulk(ids[1000:])
        p.shrink()
        # the snapshot's pages are pending: the file keeps them, and the snapshot reads them
        assert p.page_count > ids[-1].index
        assert _intact(snap, ids)
        snap.close()
        assert p.shrink() > 0
        assert p.page_count < ids[2000].index
        assert _intact(p, ids[:1000])
    check_ok(path)


def test_a_registered_reader_keeps_its_pages(core: str, path: str) -> None:
    with mp.Pager.create(path, 1024, sync=False) as p:
        ids = p.alloc_bulk(3000)
        _fill(p, ids)
        with mp.ReadOnlyPager.open(path) as ro:
            p.free_bulk(ids[500:])
            p.shrink()
            assert p.page_count > ids[-1].index  # the reader's commit still has them
            assert _intact(ro, ids)
            assert ro.refresh()  # to the shrink: no "truncated" for a file that shrank
            assert ro.page_count == p.page_count
        assert p.shrink() > 0 and p.page_count < ids[1000].index
        with mp.ReadOnlyPager.open(path) as ro:
            assert _intact(ro, ids[:500]) and len(list(ro.iter_allocated_pages())) == 500


def test_readers_refreshing_while_the_writer_shrinks_never_see_a_truncation(
    core: str, path: str
) -> None:
    """A reader whose records were read before a shrink's cut and whose file length after it
    must take the newer record, not report a truncated file."""
    with mp.Pager.create(path, 1024, sync=False) as p:
        stop = threading.Event()
        errors: list[BaseException] = []

        def read() -> None:
            try:
                while not stop.is_set():
                    with mp.ReadOnlyPager.open(path) as ro:
                        for _ in range(20):
                            ro.refresh()
                            assert len(list(ro.iter_allocated_pages())) in (0, 2000)
            except BaseException as exc:  # reported below
                errors.append(exc)

        reader = threading.Thread(target=read)
        reader.start()
        try:
            for _ in range(150):  # grown, freed and cut again: each race many times
                ids = p.alloc_bulk(2000)
                p.free_bulk(ids)
                p.shrink()
        finally:
            stop.set()
            reader.join()
        assert not errors, errors[0]
    check_ok(path)


def test_shrink_is_refused_inside_a_batch_and_after_close(core: str, path: str) -> None:
    p = mp.Pager.create(path, 1024, sync=False)
    ids = p.alloc_bulk(100)
    with p.batch():
        p.free_bulk(ids)
        with pytest.raises(ValueError, match="batch"):
            p.shrink()
    assert p.free_page_count > 100 and p.shrink() > 0
    p.close()
    with pytest.raises(mp.Unavailable):
        p.shrink()


def test_a_damaged_protected_page_is_not_moved(core: str, path: str) -> None:
    """Moving a protected page down checks its content first: a damaged one is reported, not
    given a fresh checksum."""
    with mp.Pager.create(path, 1024, sync=False) as p:
        ids = p.alloc_bulk(200)
        ppid = p.alloc_protected()
        page = p._core.ppage(int(ppid))
        p.free_bulk(ids)
    with open(path, "r+b") as f:
        f.seek(page * 1024 + 10)
        f.write(b"damage")
    with mp.Pager.open(path) as p:
        with pytest.raises(mp.CorruptProtectedDirectory):
            p.shrink()
        assert p.alloc()  # the pager goes on: the shrink took nothing with it


def test_the_cli_shrinks_a_file(core: str, path: str) -> None:
    with mp.Pager.create(path, 1024, sync=False) as p:
        p.free_bulk(p.alloc_bulk(5000))
    size = os.path.getsize(path)
    env = dict(os.environ, MAPPEDPAGES_CORE=core)
    out = subprocess.run(
        [sys.executable, "-m", "mappedpages", "shrink", path],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert os.path.getsize(path) < size // 4
    assert str((size - os.path.getsize(path)) // 1024) in out.stdout
    check_ok(path)
