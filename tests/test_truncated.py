"""A file another process truncates: the next call that would commit, refresh, open or take a
snapshot raises instead of going on, and no record naming pages past the end is written."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

import mappedpages as mp

PS = 1024


def _records(path: str) -> bytes:
    """Both record pages as the file holds them now (what is left of them)."""
    with open(path, "rb") as f:
        f.seek(PS)
        return f.read(2 * PS)


def _made(path: str) -> tuple[list[mp.PageId], list[mp.ProtectedPageId]]:
    with mp.Pager.create(path, PS) as p:
        pages = p.alloc_bulk(40)
        protected = p.alloc_protected_bulk(3)
        with protected[0].get_mut(p) as w:
            w.page_mut()[:4] = b"kept"
    return pages, protected


# where the file is cut: inside its last page, just after the record pages, to nothing
CUTS: dict[str, Callable[[int], int]] = {
    "last-page": lambda size: size - PS // 2,
    "records-kept": lambda size: 3 * PS,
    "empty": lambda size: 0,
}


@pytest.mark.parametrize("cut", list(CUTS))
def test_a_reader_refuses_a_truncated_file(core: str, path: str, cut: str) -> None:
    _made(path)
    with mp.ReadOnlyPager.open(path) as ro:
        seen = ro.generation
        assert ro.refresh() is False
        os.truncate(path, CUTS[cut](os.path.getsize(path)))
        with pytest.raises(mp.CorruptMetadata, match="truncated"):
            ro.refresh()
        with pytest.raises(mp.CorruptMetadata, match="truncated"):
            ro.refresh()  # and again: it kept the state it had, and still will not go on
        assert ro.generation == seen
    with pytest.raises(mp.MappedPageError):
        mp.ReadOnlyPager.open(path)


def test_a_reader_refuses_a_truncated_file_the_writer_still_holds(core: str, path: str) -> None:
    with mp.Pager.create(path, PS) as p:
        pid = p.alloc()
        with mp.ReadOnlyPager.open(path) as ro:
            p.free(pid)
            os.truncate(path, 3 * PS)
            with pytest.raises(mp.CorruptMetadata, match="truncated"):
                ro.refresh()
            with pytest.raises(mp.CorruptMetadata, match="truncated"):
                p.alloc()


Ids = tuple[list[mp.PageId], list[mp.ProtectedPageId]]


def _alloc(p: mp.Pager, ids: Ids, staged: mp.ProtectedPageWriter) -> None:
    p.alloc()


def _alloc_bulk(p: mp.Pager, ids: Ids, staged: mp.ProtectedPageWriter) -> None:
    p.alloc_bulk(5000)  # grows the file: growth must not lengthen it back


def _free(p: mp.Pager, ids: Ids, staged: mp.ProtectedPageWriter) -> None:
    p.free(ids[0][0])


def _alloc_protected(p: mp.Pager, ids: Ids, staged: mp.ProtectedPageWriter) -> None:
    p.alloc_protected()


def _protected_write(p: mp.Pager, ids: Ids, staged: mp.ProtectedPageWriter) -> None:
    staged.page_mut()[:4] = b"lost"  # staged before the cut, from the page while it was there
    staged.commit()


def _batch(p: mp.Pager, ids: Ids, staged: mp.ProtectedPageWriter) -> None:
    with p.batch():
        p.free(ids[0][1])
        p.alloc()


def _snapshot(p: mp.Pager, ids: Ids, staged: mp.ProtectedPageWriter) -> None:
    p.snapshot()


CALLS = {
    f.__name__.strip("_"): f
    for f in (_alloc, _alloc_bulk, _free, _alloc_protected, _protected_write, _batch, _snapshot)
}


@pytest.mark.parametrize("cut", list(CUTS))
@pytest.mark.parametrize("call", list(CALLS))
def test_a_writer_refuses_a_truncated_file(core: str, path: str, call: str, cut: str) -> None:
    ids = _made(path)
    p = mp.Pager.open(path)
    try:
        gen = p.generation
        staged = ids[1][0].get_mut(p)
        size = CUTS[cut](os.path.getsize(path))
        os.truncate(path, size)
        before = _records(path)
        with pytest.raises(mp.CorruptMetadata, match="truncated"):
            CALLS[call](p, ids, staged)
        assert _records(path) == before  # no record was written, past the end or not
        assert os.path.getsize(path) == size  # nor was the file lengthened again
        with pytest.raises(mp.Unavailable):  # what the pager held is gone: reopen the file
            p.alloc()
        assert p.generation == gen
    finally:
        p.close()
    assert _records(path) == before and os.path.getsize(path) == size  # nor by close()
    with pytest.raises(mp.MappedPageError):
        mp.Pager.open(path)
