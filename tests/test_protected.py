"""Protected (copy-on-write) pages, on both cores."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap

import pytest

import mappedpages as mp
from helpers import check_ok
from mappedpages.checker import check_file
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


def _internal(pager: mp.Pager) -> list[int]:
    """Every internal page of the state: pages 0-2, tree blocks, protected pages' contents."""
    return [i for i in range(pager.page_count) if pager._core.kind(i) == 2]


def test_iterators_disjoint_and_internal_pages_hidden(pager: mp.Pager) -> None:
    regular = pager.alloc_bulk(10)
    protected = pager.alloc_protected_bulk(10)
    more = pager.alloc_bulk(5)
    pages = list(pager.iter_allocated_pages())
    assert pages == sorted(regular + more)
    assert list(pager.iter_allocated_protected_pages()) == protected
    # everything in use is a regular page or an internal one: pages 0-2, tree blocks and the
    # page holding each protected page's content
    internal = _internal(pager)
    used = pager.page_count - pager.free_page_count
    assert used == len(pages) + len(internal)
    contents = {pager._core.ppage(int(x)) for x in protected}
    assert contents <= set(internal) and {0, 1, 2} <= set(internal)
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
    gen = pager.generation
    with pytest.raises(mp.DoubleFree):
        pager.free_protected_bulk([ids[0], ids[1], ids[0]])
    assert pager.generation == gen  # nothing was committed
    pager.free_protected(ids[5])
    with pytest.raises(mp.DoubleFree):
        pager.free_protected_bulk([ids[2], ids[5]])
    with pytest.raises(mp.DoubleFree):  # freed twice, as for regular pages
        pager.free_protected(ids[5])
    with pytest.raises(mp.OutOfBounds):  # never allocated
        pager.free_protected(ProtectedPageId(1000, 1024))
    assert pager.generation == gen + 1
    assert list(pager.iter_allocated_protected_pages()) == ids[:5]
    pager.free_protected_bulk(ids[:5])
    assert list(pager.iter_allocated_protected_pages()) == []
    assert pager.generation == gen + 2


ALL_OR_NOTHING = """
    import errno, json, resource, signal, sys
    import mappedpages as mp
    path = sys.argv[1]
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    with mp.Pager.create(path, 1024, preallocate=False) as p:
        keep = p.alloc_protected()
        state = (p.page_count, p.free_page_count, p.generation)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, resource.RLIM_INFINITY))
        try:
            p.alloc_protected_bulk(100)  # needs the file to grow past the limit
        except OSError as exc:
            failed = exc.errno
        after = (p.page_count, p.free_page_count, p.generation)
        ids = [int(x) for x in p.iter_allocated_protected_pages()]
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
        more = len(p.alloc_protected_bulk(100))  # and the pager still works
    print(json.dumps({"failed": failed, "same": state == after, "ids": ids, "more": more}))
"""


def test_alloc_protected_bulk_is_all_or_nothing(core: str, path: str) -> None:
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(ALL_OR_NOTHING), path],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, MAPPEDPAGES_CORE=core),
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["failed"] in (27, 28) and result["same"]  # EFBIG, and nothing of the call
    assert result["ids"] == [0] and result["more"] == 100
    report = check_ok(path)
    assert report.protected_pages == 101


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


def test_no_ceiling_on_protected_pages(core: str, path: str) -> None:
    # format 1 stopped at 3,600 protected pages with 1 KiB pages
    with mp.Pager.create(path, 1024, sync=False) as p:
        ids = p.alloc_protected_bulk(4000)
        ids += [p.alloc_protected() for _ in range(100)]
        assert ids == [ProtectedPageId(i, 1024) for i in range(4100)]
        p.free_protected(ProtectedPageId(7, 1024))
        assert p.alloc_protected() == ProtectedPageId(7, 1024)  # the lowest free slot
    report = check_ok(path)
    assert report.protected_pages == 4100


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


def test_pages_the_committed_state_uses_are_not_reused_in_the_same_batch(pager: mp.Pager) -> None:
    with pager.batch():
        old = pager.alloc_protected()
    committed = set(_internal(pager))
    with pager.batch():
        pager.free_protected(old)
        regular = pager.alloc_bulk(3)
        pager.free_bulk(regular)  # the committed state never had these: they may be reused
        fresh = pager.alloc_protected()
        assert fresh == old
        page = pager._core.ppage(int(fresh))
        assert page not in committed
        assert page in {int(x) for x in regular}


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
        p.alloc_protected_bulk(70)  # two directory leaves of 62 slots
        p.alloc_bulk(4)
        internal = len(_internal(p))
    report = check_ok(path)
    assert report.protected_pages == 70
    assert report.internal_pages == internal >= 3 + 70 + 2
    assert report.allocated_data_pages == 4


def test_damaged_directory_is_reported(core: str, path: str) -> None:
    from mappedpages import format as fmt

    with mp.Pager.create(path, 1024) as p:
        ids = p.alloc_protected_bulk(3)
        p._core.checkpoint_now()  # the directory's leaf written as a block
        p.alloc()  # a commit after it: the blocks are no longer the newest commit's own pages
        content = p._core.ppage(int(ids[1]))
    report = check_ok(path)
    with open(path, "rb") as f:
        f.seek((1 + report.record) * 1024)
        rec = fmt.Record(*fmt.RECORD.unpack_from(f.read(128), 0))
    assert rec.dir_root and rec.checkpoint == rec.generation - 1
    with open(path, "r+b") as f:  # a protected page's content: found when it is read
        f.seek(content * 1024 + 40)
        f.write(b"\xff" * 8)
    with mp.Pager.open(path) as p:
        with pytest.raises(mp.CorruptProtectedDirectory):
            p.get_protected_page(ids[1])
        assert bytes(p.get_protected_page(ids[0])) == bytes(1024)
    assert any("does not match its checksum" in x for x in check_file(path, mp.crc32c).problems)
    with open(path, "r+b") as f:  # the directory's root: both records name it
        f.seek(rec.dir_root * 1024 + 40)
        f.write(b"\xff" * 8)
    with pytest.raises(mp.CorruptProtectedDirectory):
        mp.Pager.open(path)
    assert not check_file(path, mp.crc32c).ok
    os.unlink(path)


def test_a_second_writer_of_one_page_cannot_undo_the_first(pager: mp.Pager) -> None:
    ppid = pager.alloc_protected()
    first, second = ppid.get_mut(pager), ppid.get_mut(pager)
    first.page_mut()[:5] = b"first"
    first.commit()
    second.page_mut()[:6] = b"second"
    with pytest.raises(mp.WriteConflict):
        second.commit()  # it started from the content before "first": it would undo it
    assert _content(pager, ppid)[:5] == b"first"
    with ppid.get_mut(pager) as third:  # a writer made now starts from "first"
        assert bytes(third.page_mut()[:5]) == b"first"
        third.page_mut()[:5] = b"third"
    assert _content(pager, ppid)[:5] == b"third"
