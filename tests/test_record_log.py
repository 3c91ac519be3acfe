"""The commit record's log: protected writes that commit one page and the record.

From 2 KiB pages on, page 0 holds two commit records, and a protected write records its slot's
new current copy in the record's log instead of rewriting the directory block; the next commit
that writes directory blocks writes those too and empties the log (docs/FORMAT.md, "Commit
records").
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest

import mappedpages as mp
from helpers import check_ok
from mappedpages import format as fmt
from mappedpages.checker import check_file
from mappedpages.handles import ProtectedPageId

PS = 4096
ENTRIES = fmt.RECORD_LOG_MAX // fmt.LOG_ENTRY.size


def _write(p: mp.Pager, ppid: ProtectedPageId, data: bytes) -> None:
    with ppid.get_mut(p) as w:
        w.page_mut()[: len(data)] = data


def _read(p: mp.Pager, ppid: ProtectedPageId, n: int) -> bytes:
    return bytes(p.get_protected_page(ppid)[:n])


def _logged(path: str) -> int:
    report = check_file(path, mp.crc32c)
    assert report.ok, report.problems
    return report.log_entries


def _newest_record(path: str) -> int:
    with open(path, "rb") as f:
        head = f.read(2 * PS)
    records = [fmt.read_record(head, i, mp.crc32c) for i in (0, 1)]
    gens = [r.generation if r else -1 for r in records]
    return gens.index(max(gens))


def _reseal_newest_record(path: str, edit: Callable[[bytearray], None]) -> None:
    """Change the newest commit record with ``edit`` and make its checksum match again."""
    off = fmt.RECORD_OFFSET + _newest_record(path) * fmt.RECORD_SIZE
    with open(path, "r+b") as f:
        f.seek(off)
        record = bytearray(f.read(fmt.RECORD_SIZE))
        edit(record)
        crc = mp.crc32c(bytes(record[: fmt.RECORD_CRC_OFFSET]))
        struct.pack_into("<I", record, fmt.RECORD_CRC_OFFSET, crc)
        f.seek(off)
        f.write(record)


def test_a_protected_write_goes_to_the_log(core: str, path: str) -> None:
    with mp.Pager.create(path, PS) as p:
        a, b = p.alloc_protected_bulk(2)
        assert _logged(path) == 0
        _write(p, a, b"first")
        assert _logged(path) == 1
        _write(p, a, b"again")  # the same slot: its entry is updated, not repeated
        _write(p, b, b"other")
        assert _logged(path) == 2
        page = p.alloc()  # a commit of the allocation state carries the log along
        assert _logged(path) == 2
    with mp.Pager.open(path) as p:
        assert _read(p, a, 5) == b"again" and _read(p, b, 5) == b"other"
        assert list(p.iter_allocated_pages()) == [page]


def test_a_commit_writing_blocks_empties_the_log(core: str, path: str) -> None:
    with mp.Pager.create(path, PS) as p:
        a, b = p.alloc_protected_bulk(2)
        _write(p, a, b"logged")
        assert _logged(path) == 1
        c = p.alloc_protected()  # writes a's block (with the logged change) and the new entry
        assert _logged(path) == 0
        _write(p, b, b"next")
        assert _logged(path) == 1
    with mp.Pager.open(path) as p:
        assert [_read(p, x, 6) for x in (a, b, c)] == [b"logged", b"next\0\0", bytes(6)]


def test_a_full_log_is_written_out(core: str, path: str) -> None:
    with mp.Pager.create(path, PS) as p:
        ids = p.alloc_protected_bulk(ENTRIES + 3)
        seen = []
        for i, ppid in enumerate(ids):
            _write(p, ppid, struct.pack("<I", i))
            seen.append(_logged(path))
    # one entry per slot until the log is full; the next write empties it into the blocks
    assert seen == [*range(1, ENTRIES + 1), 0, 1, 2]
    with mp.Pager.open(path) as p:
        assert [_read(p, x, 4) for x in ids] == [struct.pack("<I", i) for i in range(len(ids))]
    check_ok(path)


def test_a_rollback_restores_the_committed_log(core: str, path: str) -> None:
    with mp.Pager.create(path, PS) as p:
        a, b = p.alloc_protected_bulk(2)
        _write(p, a, b"kept")
        committed = p._core.log
        assert len(committed) == fmt.LOG_ENTRY.size
        with pytest.raises(RuntimeError), p.batch():
            _write(p, b, b"dropped")
            raise RuntimeError("abandon the batch")
        assert p._core.log == committed
        assert _read(p, b, 7) == bytes(7)
        _write(p, b, b"later")
    with mp.Pager.open(path) as p:
        assert _read(p, a, 4) == b"kept" and _read(p, b, 5) == b"later"


def test_a_damaged_newest_record_means_the_previous_commit(core: str, path: str) -> None:
    with mp.Pager.create(path, PS) as p:
        (a,) = p.alloc_protected_bulk(1)
        _write(p, a, b"one")
        _write(p, a, b"two")
    newest = _newest_record(path)
    with open(path, "r+b") as f:  # as if its write had been cut short
        f.seek(fmt.RECORD_OFFSET + newest * fmt.RECORD_SIZE + 40)
        f.write(b"\xff")
    check_ok(path)
    with mp.Pager.open(path) as p:
        assert _read(p, a, 3) == b"one"
        _write(p, a, b"three")  # overwrites the damaged record
    with mp.Pager.open(path) as p:
        assert _read(p, a, 5) == b"three"
    check_ok(path)


@pytest.mark.parametrize("forge", ["free slot", "twice", "beyond"])
def test_a_forged_log_is_rejected(core: str, path: str, forge: str) -> None:
    with mp.Pager.create(path, PS) as p:
        a, b = p.alloc_protected_bulk(2)
        p.free_protected(b)
        _write(p, a, b"x")

    def forged(record: bytearray) -> None:
        entry = record[fmt.RECORD_LOG_OFFSET : fmt.RECORD_LOG_OFFSET + 4]
        log = {
            "free slot": struct.pack("<I", int(b)),
            "twice": bytes(entry) * 2,
            "beyond": struct.pack("<I", 5000),
        }[forge]
        struct.pack_into("<I", record, 20, len(log))
        record[fmt.RECORD_LOG_OFFSET : fmt.RECORD_LOG_OFFSET + len(log)] = log

    _reseal_newest_record(path, forged)
    with pytest.raises(mp.CorruptProtectedDirectory):
        mp.Pager.open(path)
    with pytest.raises(mp.CorruptProtectedDirectory):
        mp.ReadOnlyPager.open(path)
    assert not check_file(path, mp.crc32c).ok


def test_one_kib_pages_have_one_record_and_no_log(core: str, path: str) -> None:
    with mp.Pager.create(path, 1024) as p:
        (a,) = p.alloc_protected_bulk(1)
        _write(p, a, b"direct")
        assert _logged(path) == 0
        with pytest.raises(ValueError):
            p._core.set_log(struct.pack("<I", int(a)))
    with open(path, "rb") as f:
        record = fmt.read_record(f.read(1024), 0, mp.crc32c)
    assert record is not None and record.log == b""
    with mp.Pager.open(path) as p:
        assert _read(p, a, 6) == b"direct"


@pytest.mark.parametrize("size", [3, fmt.RECORD_LOG_MAX + 4])
def test_set_log_checks_its_length(core: str, path: str, size: int) -> None:
    with mp.Pager.create(path, PS) as p, pytest.raises(ValueError):
        p._core.set_log(bytes(size))


# -- one-barrier commits --------------------------------------------------------------------


def _record(path: str) -> fmt.Record:
    with open(path, "rb") as f:
        head = f.read(2 * PS)
    record = fmt.read_record(head, _newest_record(path), mp.crc32c)
    assert record is not None
    return record


def _page(path: str, page: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(page * PS)
        return f.read(PS)


def _put_page(path: str, page: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(page * PS)
        f.write(data)


def test_small_commits_take_one_barrier(core: str, path: str) -> None:
    with mp.Pager.create(path, PS) as p:
        p.alloc_bulk(20)  # grows the file: two barriers, the new length must be durable first
        assert not _record(path).one_barrier
        pid = p.alloc()  # the metadata alone: named by the record with its crc
        record = _record(path)
        assert record.one_barrier and record.checks == ()
        (a,) = p.alloc_protected_bulk(1)  # a new directory block: two barriers
        assert not _record(path).one_barrier
        _write(p, a, b"content")  # its content page, listed with its checksum
        record = _record(path)
        assert record.one_barrier and len(record.checks) == 1
        (page, crc) = record.checks[0]
        assert mp.crc32c(_page(path, page)) == crc and _page(path, page)[:7] == b"content"
        p.free(pid)
        assert _record(path).one_barrier
    check_ok(path)


@pytest.mark.parametrize("lost", ["listed page", "metadata"])
def test_a_one_barrier_commit_cut_short_is_passed_over(core: str, path: str, lost: str) -> None:
    with mp.Pager.create(path, PS) as p:
        (a,) = p.alloc_protected_bulk(1)
        _write(p, a, b"before")
        before = list(p.iter_allocated_pages())
    with open(path, "rb") as f:
        image = f.read()
    with mp.Pager.open(path) as p:
        if lost == "listed page":
            _write(p, a, b"after!")
            (page, _crc) = _record(path).checks[0]
        else:
            p.alloc()
            page = 1 + "AB".index(check_file(path, mp.crc32c).active)
    # the record landed, that page did not: as if the power failed before the barrier ended
    _put_page(path, page, image[page * PS : (page + 1) * PS])
    report = check_file(path, mp.crc32c)
    assert report.ok and any("cut short" in note for note in report.notes), report.notes
    newest = _newest_record(path)
    with mp.ReadOnlyPager.open(path) as r:
        assert _read(r, a, 6) == b"before" and list(r.iter_allocated_pages()) == before
    with mp.Pager.open(path) as p:  # a writer erases the record that was passed over
        with open(path, "rb") as f:
            f.seek(fmt.RECORD_OFFSET + newest * fmt.RECORD_SIZE)
            assert f.read(fmt.RECORD_SIZE) == bytes(fmt.RECORD_SIZE)
        assert _read(p, a, 6) == b"before" and list(p.iter_allocated_pages()) == before
        _write(p, a, b"again!")
    with mp.Pager.open(path) as p:
        assert _read(p, a, 6) == b"again!"
    check_ok(path)


def test_a_listed_page_outside_the_file_is_not_trusted(core: str, path: str) -> None:
    with mp.Pager.create(path, PS) as p:
        (a,) = p.alloc_protected_bulk(1)
        _write(p, a, b"one")
        _write(p, a, b"two")
    entry = fmt.RECORD_CHECK_OFFSET + fmt.RECORD_CHECK_HEAD.size
    _reseal_newest_record(path, lambda record: struct.pack_into("<Q", record, entry, 1 << 40))
    with mp.ReadOnlyPager.open(path) as r:
        assert _read(r, a, 3) == b"one"


# -- pages that read as zeros already ------------------------------------------------------


def test_alloc_protected_zeroes_only_pages_that_may_hold_data(core: str, path: str) -> None:
    with mp.Pager.create(path, PS) as p:
        (fresh,) = p.alloc_protected_bulk(1)  # new space: not written, and reads as zeros
        written = p.alloc_bulk(3)
        for pid in written:
            p.get_page_mut(pid)[:] = b"\xee" * PS
        p.flush()
        p.free_bulk(written)
        reused = p.alloc_protected()  # takes two of the freed pages: page a must be zeroed
        record = _record(path)
        assert {page for page, _crc in record.checks} & {int(x) for x in written}
        assert _read(p, fresh, PS) == bytes(PS) and _read(p, reused, PS) == bytes(PS)
    with mp.Pager.open(path) as p:
        assert _read(p, fresh, PS) == bytes(PS) and _read(p, reused, PS) == bytes(PS)
    check_ok(path)


def test_alloc_protected_zeroes_new_space_written_through_a_forged_handle(
    core: str, path: str
) -> None:
    with mp.Pager.create(path, PS) as p:
        got = p.alloc_bulk(100)  # grows the file
        start = int(got[-1]) + 1
        assert start < p.page_count - 8
        for index in range(start, start + 8):  # never handed out, but written all the same
            p.get_page_mut(mp.PageId(index, PS))[:] = b"\xaa" * PS
        ppid = p.alloc_protected()
        assert _read(p, ppid, PS) == bytes(PS)
    with mp.Pager.open(path) as p:
        assert _read(p, ppid, PS) == bytes(PS)
    check_ok(path)
