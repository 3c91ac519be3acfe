"""Pages freed since the last commit that the committed state uses are held until the commit.

Inside a batch (or any uncommitted state), freeing a page does not make it allocatable: the
committed state still uses it, and a crash or a rollback before the commit must find it as it
was. A copy-on-write structure that frees its old node and allocates a new one in one batch
never writes over the old node. A page allocated and freed within the batch is reused at once.
"""

from __future__ import annotations

import pytest

import mappedpages as mp
from helpers import check_ok

PS = 1024


def _fill(p: mp.Pager, pid: mp.PageId, byte: int) -> None:
    p.get_page_mut(pid)[:] = bytes([byte]) * PS


def _allocated(p: mp.Pager) -> set[int]:
    return {int(x) for x in p.iter_allocated_pages()}


def test_a_freed_page_is_not_handed_out_before_the_commit(core: str, path: str) -> None:
    with mp.Pager.create(path, PS) as p:
        old = p.alloc_bulk(6)
        for pid in old:
            _fill(p, pid, 0xAA)
        p.flush()
        free_before = p.free_page_count
        with p.batch():
            p.free(old[0])
            p.free_bulk(old[1:3])
            held = {int(x) for x in old[:3]}
            assert not held & _allocated(p)
            assert p.free_page_count == free_before + 3
            new = [p.alloc(), *p.alloc_bulk(20)]
            assert not held & {int(x) for x in new}
            for pid in new:  # a copy-on-write writer fills its new nodes
                _fill(p, pid, 0x55)
            for pid in old:  # and the nodes the committed state uses are untouched
                assert bytes(p.get_page(pid)) == b"\xaa" * PS
            with pytest.raises(mp.DoubleFree):
                p.free(old[0])
            with pytest.raises(mp.DoubleFree):
                p.free_bulk([old[3], old[1]])
            assert int(old[3]) in _allocated(p)  # the failed call freed nothing
        assert p.alloc() == old[0]  # committed: the lowest free page again
    check_ok(path)


def test_a_rolled_back_batch_finds_its_freed_pages_as_they_were(core: str, path: str) -> None:
    with mp.Pager.create(path, PS) as p:
        old = p.alloc_bulk(4)
        for pid in old:
            _fill(p, pid, 0xAA)
        before = _allocated(p)
        with pytest.raises(KeyError), p.batch():
            p.free_bulk(old)
            for _ in range(8):
                _fill(p, p.alloc(), 0x55)
            raise KeyError
        assert _allocated(p) == before
        for pid in old:
            assert bytes(p.get_page(pid)) == b"\xaa" * PS
        p.free_bulk(old)  # and they can be freed for real
        assert not {int(x) for x in old} & _allocated(p)
    check_ok(path)


def test_a_page_allocated_and_freed_in_the_batch_is_reused(core: str, path: str) -> None:
    with mp.Pager.create(path, PS) as p:
        count = p.page_count
        with p.batch():
            for _ in range(1000):
                pid = p.alloc()
                p.free(pid)
                assert p.alloc() == pid
                p.free(pid)
        assert p.page_count == count  # no growth for pages the committed state never had
    check_ok(path)


def test_allocations_grow_the_file_past_held_pages(core: str, path: str) -> None:
    with mp.Pager.create(path, PS) as p:
        got = p.alloc_bulk(p.free_page_count)  # every page in use
        count = p.page_count
        with p.batch():
            p.free_bulk(got[:10])
            new = p.alloc_bulk(10)
            assert p.page_count > count
            assert not {int(x) for x in got[:10]} & {int(x) for x in new}
            assert p.alloc() not in got[:10]
        assert {int(x) for x in p.alloc_bulk(10)} == {int(x) for x in got[:10]}
    check_ok(path)


def test_protected_pages_freed_in_a_batch_keep_their_content(core: str, path: str) -> None:
    with mp.Pager.create(path, PS) as p:
        a = p.alloc_protected()
        with a.get_mut(p) as w:
            w.page_mut()[:4] = b"keep"
        with pytest.raises(KeyError), p.batch():
            p.free_protected(a)
            for _ in range(4):
                _fill(p, p.alloc(), 0x55)
                with p.alloc_protected().get_mut(p) as w:
                    w.page_mut()[:4] = b"junk"
            raise KeyError
        assert bytes(p.get_protected_page(a)[:4]) == b"keep"
    check_ok(path)
