"""Protected (copy-on-write) pages, on both cores."""

from __future__ import annotations

import os
import random

import pytest

import mappedpages as mp
from helpers import check_ok
from mappedpages.handles import ProtectedPageId
from mappedpages.protected import ProtectedPageWriter


def _content(p: mp.Pager, ppid: ProtectedPageId) -> bytes:
    return bytes(p.get_protected_page(ppid))


def test_new_protected_page_reads_as_zeros(pager: mp.Pager) -> None:
    ppid = pager.alloc_protected()
    assert isinstance(ppid, ProtectedPageId)
    assert _content(pager, ppid) == bytes(1024)
    assert len(ppid.get(pager)) == 1024
    with pytest.raises(TypeError):
        ppid.get(pager)[0] = 1  # the committed copy is read-only


def test_staged_write_invisible_until_commit(pager: mp.Pager) -> None:
    ppid = pager.alloc_protected()
    w = ppid.get_mut(pager)
    assert isinstance(w, ProtectedPageWriter)
    w.page_mut()[0:5] = b"hello"
    assert _content(pager, ppid)[:5] == bytes(5)
    w.commit()
    assert _content(pager, ppid)[:5] == b"hello"
    with pytest.raises(mp.Unavailable):
        w.page_mut()
    with pytest.raises(mp.Unavailable):
        w.commit()


def test_staged_copy_starts_as_committed_content(pager: mp.Pager) -> None:
    ppid = pager.alloc_protected()
    with ppid.get_mut(pager) as w:
        w.page_mut()[:] = bytes(range(256)) * 4
    with ppid.get_mut(pager) as w:
        page = w.page_mut()
        assert bytes(page) == bytes(range(256)) * 4  # read-modify-write sees the real content
        page[0] = 99
    assert _content(pager, ppid)[:2] == bytes([99, 1])


def test_discard_and_exception_keep_committed(pager: mp.Pager) -> None:
    ppid = pager.alloc_protected()
    with ppid.get_mut(pager) as w:
        w.page_mut()[:3] = b"old"
    w = ppid.get_mut(pager)
    w.page_mut()[:3] = b"new"
    w.discard()
    assert _content(pager, ppid)[:3] == b"old"
    with pytest.raises(KeyError), ppid.get_mut(pager) as w:
        w.page_mut()[:3] = b"bad"
        raise KeyError("boom")
    assert _content(pager, ppid)[:3] == b"old"


def test_committed_content_survives_reopen(core: str, path: str) -> None:
    with mp.Pager.create(path, 1024) as p:
        ids = p.alloc_protected_bulk(3)
        for i, ppid in enumerate(ids):
            with ppid.get_mut(p) as w:
                w.page_mut()[:4] = f"v{i}v1".encode()[:4]
        with ids[1].get_mut(p) as w:
            w.page_mut()[:4] = b"v1v2"
    check_ok(path)
    with mp.Pager.open(path) as p:
        got = [_content(p, ProtectedPageId(i, 1024))[:4] for i in range(3)]
        assert got == [b"v0v1", b"v1v2", b"v2v1"]
        expected = [ProtectedPageId(i, 1024) for i in range(3)]
        assert list(p.iter_allocated_protected_pages()) == expected


def test_slot_reuse_and_fresh_content(pager: mp.Pager) -> None:
    b = pager.alloc_protected_bulk(3)[1]
    with b.get_mut(pager) as w:
        w.page_mut()[:4] = b"used"
    pager.free_protected(b)
    with pytest.raises(mp.OutOfBounds):
        pager.get_protected_page(b)
    again = pager.alloc_protected()
    assert again == b  # the lowest free slot comes back
    assert _content(pager, again) == bytes(1024)  # with fresh content


def test_iterators_disjoint_and_internal_pages_hidden(pager: mp.Pager) -> None:
    regular = pager.alloc_bulk(10)
    protected = pager.alloc_protected_bulk(10)
    more = pager.alloc_bulk(5)
    pages = list(pager.iter_allocated_pages())
    assert pages == sorted(regular + more)
    assert list(pager.iter_allocated_protected_pages()) == protected
    # everything allocated in the bitmap is a regular page or a directory page
    used = sum(1 for i in range(pager.page_count) if pager._core.is_allocated(i))
    internal = set(pager._internal)
    assert len(internal) == 2 + 2 + 2 * 10  # index, one block, two copies per page
    assert used == 3 + len(pages) + len(internal)
    for page in internal:
        pid = mp.PageId(page, 1024)
        assert pid not in pages
        with pytest.raises(mp.ReservedPage):
            pager.free(pid)
        with pytest.raises(mp.ReservedPage):
            pager.get_page(pid)
        with pytest.raises(mp.ReservedPage):
            pager.free_bulk([regular[0], pid])
    assert list(pager.iter_allocated_pages()) == pages  # nothing was freed


def test_free_protected_bulk_is_atomic(pager: mp.Pager) -> None:
    ids = pager.alloc_protected_bulk(6)
    free_before = pager.free_page_count
    with pytest.raises(mp.DoubleFree):
        pager.free_protected_bulk([ids[0], ids[1], ids[0]])
    pager.free_protected(ids[5])
    with pytest.raises(mp.OutOfBounds):
        pager.free_protected_bulk([ids[2], ids[5]])
    with pytest.raises(mp.OutOfBounds):
        pager.free_protected(ids[5])
    assert list(pager.iter_allocated_protected_pages()) == ids[:5]
    assert pager.free_page_count == free_before + 2
    pager.free_protected_bulk(ids[:5])
    assert list(pager.iter_allocated_protected_pages()) == []
    assert pager.free_page_count == free_before + 12


def test_alloc_protected_bulk_is_all_or_nothing(
    pager: mp.Pager, monkeypatch: pytest.MonkeyPatch
) -> None:
    keep = pager.alloc_protected()
    state = (pager.page_count, pager.free_page_count, list(pager.iter_allocated_pages()))
    calls = {"n": 0}
    real = pager._core.alloc_bulk

    def failing(n: int) -> list[int]:
        calls["n"] += 1
        if calls["n"] == 40:
            raise OSError(28, "No space left on device")
        return real(n)  # type: ignore[no-any-return]

    monkeypatch.setattr(pager._core, "alloc_bulk", failing)
    with pytest.raises(OSError):
        pager.alloc_protected_bulk(100)
    monkeypatch.undo()
    assert list(pager.iter_allocated_protected_pages()) == [keep]
    assert (pager.page_count, pager.free_page_count, list(pager.iter_allocated_pages())) == state
    assert len(pager.alloc_protected_bulk(100)) == 100  # and the pager still works


def test_two_thousand_protected_pages_on_1k_pages(core: str, path: str) -> None:
    rng = random.Random(11)
    with mp.Pager.create(path, 1024, sync=False) as p:
        ids = p.alloc_protected_bulk(2100)
        expect = {}
        for ppid in rng.sample(ids, 300):
            data = rng.randbytes(16)
            with ppid.get_mut(p) as w:
                w.page_mut()[:16] = data
            expect[ppid] = data
    check_ok(path)
    with mp.Pager.open(path) as p:
        assert list(p.iter_allocated_protected_pages()) == ids
        for ppid in ids:
            assert _content(p, ppid)[:16] == expect.get(ppid, bytes(16))


def test_directory_full(core: str, path: str) -> None:
    with mp.Pager.create(path, 1024, sync=False) as p:
        room = p._dir.room()
        assert room == 60 * 60  # 1 KiB blocks: 60 blocks of 60 entries
        with pytest.raises(mp.DirectoryFull):
            p.alloc_protected_bulk(room + 1)
        assert list(p.iter_allocated_protected_pages()) == []
        p.alloc_protected_bulk(room)
        with pytest.raises(mp.DirectoryFull):
            p.alloc_protected()
        p.free_protected(ProtectedPageId(7, 1024))
        assert p.alloc_protected() == ProtectedPageId(7, 1024)
    check_ok(path)


def test_handle_errors(pager: mp.Pager, path: str) -> None:
    ppid = pager.alloc_protected()
    with pytest.raises(TypeError):
        pager.free_protected(mp.PageId(int(ppid), 1024))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        pager.free(ppid)  # type: ignore[arg-type]
    with pytest.raises(mp.PageSizeMismatch):
        pager.get_protected_page(ProtectedPageId(int(ppid), 4096))
    with pytest.raises(mp.OutOfBounds):
        pager.get_protected_page(ProtectedPageId(12345, 1024))
    assert ppid != mp.PageId(int(ppid), 1024)
    assert hash(ppid) != hash(mp.PageId(int(ppid), 1024)) or ppid != mp.PageId(int(ppid), 1024)
    assert repr(ppid) == "ProtectedPageId(0, page_size=1024)"


def test_writer_of_a_freed_page_cannot_commit(pager: mp.Pager) -> None:
    ppid = pager.alloc_protected()
    w = ppid.get_mut(pager)
    pager.free_protected(ppid)
    again = pager.alloc_protected()
    assert again == ppid  # same slot, a different page now
    w.page_mut()[:4] = b"late"
    with pytest.raises(mp.OutOfBounds):
        w.commit()
    assert _content(pager, again) == bytes(1024)


def test_protected_calls_in_a_batch(core: str, path: str) -> None:
    with mp.Pager.create(path, 1024) as p:
        keep = p.alloc_protected()
        with keep.get_mut(p) as w:
            w.page_mut()[:4] = b"keep"
        gen = p._core.generation
        with p.batch():
            a = p.alloc_protected()
            for text in (b"one!", b"two!", b"3333"):  # the second write lands in place
                with a.get_mut(p) as w:
                    w.page_mut()[:4] = text
            with keep.get_mut(p) as w:
                w.page_mut()[:4] = b"KEEP"
            with keep.get_mut(p) as w:
                w.page_mut()[4:8] = b"!!!!"
            r = p.alloc()
        assert p._core.generation == gen + 1  # one commit for all of it
        assert _content(p, a)[:4] == b"3333"
        assert _content(p, keep)[:8] == b"KEEP!!!!"
        with pytest.raises(ZeroDivisionError), p.batch():
            b = p.alloc_protected()
            with keep.get_mut(p) as w:
                w.page_mut()[:4] = b"lost"
            p.free_protected(a)
            p.free(r)
            raise ZeroDivisionError
        assert p._core.generation == gen + 1
        assert list(p.iter_allocated_protected_pages()) == [keep, a]
        assert _content(p, keep)[:8] == b"KEEP!!!!"
        assert _content(p, a)[:4] == b"3333"
        assert b == ProtectedPageId(2, 1024)
        with pytest.raises(mp.OutOfBounds):
            p.get_protected_page(b)
    check_ok(path)
    with mp.Pager.open(path) as p:
        assert _content(p, keep)[:8] == b"KEEP!!!!"
        assert _content(p, a)[:4] == b"3333"
        assert list(p.iter_allocated_pages()) == [r]


def test_freed_pages_are_not_reused_for_the_directory_in_the_same_batch(pager: mp.Pager) -> None:
    with pager.batch():
        old = pager.alloc_protected()
    with pager.batch():
        freed = {int(x) for x in pager._dir.blocks[0]} | set(pager._internal)
        pager.free_protected(old)
        regular = pager.alloc_bulk(3)
        pager.free_bulk(regular)  # the committed state never had these: they may be reused
        fresh = pager.alloc_protected()
        assert fresh == old
        now = {pager._dir.ent_a[int(fresh)], pager._dir.ent_b[int(fresh)]}
        assert not now & (freed - set(pager._internal))
        assert now <= {int(x) for x in regular}


def test_iterator_invalidated_by_protected_calls(pager: mp.Pager) -> None:
    pager.alloc_protected_bulk(3)
    it = pager.iter_allocated_protected_pages()
    next(it)
    pager.alloc_protected()
    with pytest.raises(RuntimeError):
        next(it)
    regular = pager.iter_allocated_pages()
    pager.free_protected(ProtectedPageId(0, 1024))
    with pytest.raises(RuntimeError):
        next(regular)


def test_closed_pager_protected_calls(core: str, path: str) -> None:
    p = mp.Pager.create(path, 1024)
    ppid = p.alloc_protected()
    w = ppid.get_mut(p)
    p.close()
    for call in (
        p.alloc_protected,
        lambda: p.free_protected(ppid),
        lambda: p.get_protected_page(ppid),
        p.iter_allocated_protected_pages,
        w.commit,
    ):
        with pytest.raises(mp.Unavailable):
            call()


def test_check_and_info_count_protected_pages(core: str, path: str) -> None:
    with mp.Pager.create(path, 1024) as p:
        p.alloc_protected_bulk(70)  # two directory blocks
        p.alloc_bulk(4)
    report = check_ok(path)
    assert report.protected_pages == 70
    assert report.directory_pages == 2 + 4 + 140
    assert report.allocated_data_pages == 4


def test_damaged_directory_is_reported(core: str, path: str) -> None:
    with mp.Pager.create(path, 1024) as p:
        p.alloc_protected_bulk(3)
        index_pages = p._dir.index_pages
        block_pages = p._dir.blocks[0]
    with open(path, "r+b") as f:  # wreck both copies of the directory block
        for page in block_pages:
            f.seek(page * 1024 + 40)
            f.write(b"\xff" * 8)
    with pytest.raises(mp.CorruptProtectedDirectory):
        mp.Pager.open(path)
    with open(path, "r+b") as f:
        for page in index_pages:
            f.seek(page * 1024 + 40)
            f.write(b"\xff" * 8)
    with pytest.raises(mp.CorruptDirectoryIndex):
        mp.Pager.open(path)
    assert not mp.checker.check_file(path, mp.crc32c).ok
    os.unlink(path)
