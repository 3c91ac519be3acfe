"""Sealed pages (docs/FORMAT.md, "Sealed pages"): ``write_page``, which flushed pages a batch
seals so that its record vouches for them, and the retirement of that record before anything
writes them again. Power loss at each of these barriers: test_power_loss.py."""

from __future__ import annotations

import os
import struct

import pytest

import mappedpages as mp
from helpers import check_ok
from mappedpages import _backend
from mappedpages import format as fmt


def _records(path: str, ps: int) -> list[fmt.Record]:
    with open(path, "rb") as f:
        raw = f.read(3 * ps)
    return [fmt.Record(*fmt.RECORD.unpack_from(raw, slot * ps)) for slot in (1, 2)]


def _sealed_batch(p: mp.Pager, n: int = 4) -> list[mp.PageId]:
    with p.batch():
        new = p.alloc_bulk(n)
        for i, pid in enumerate(new):
            p.write_page(pid, bytes([i + 1]) * p.page_size)
        p.flush(new)
    return new


def test_write_page_copies_what_it_is_given_where_it_is_told(core: str, path: str) -> None:
    with mp.Pager.create(path, 1024) as p:
        (pid,) = p.alloc_bulk(1)
        p.write_page(pid, b"x" * 1024)
        p.write_page(pid, bytearray(b"abc"), 10)
        p.write_page(pid, memoryview(b"\x01\x02\x03\x04").cast("I"), 1020)  # any buffer
        p.write_page(pid, b"", 1024)
        page = bytes(p.get_page(pid))
        assert page[:10] == b"x" * 10 and page[10:13] == b"abc" and page[13:1020] == b"x" * 1007
        assert page[1020:] == b"\x01\x02\x03\x04"
        for data, offset in [(b"y" * 1025, 0), (b"y", 1024), (b"y", -1), (b"y" * 2, 1023)]:
            with pytest.raises(ValueError, match="do not fit"):
                p.write_page(pid, data, offset)
        with pytest.raises(ValueError):
            p.write_page(pid, b"y", 1.0)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            p.write_page(pid, "text")  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            p.write_page(int(pid), b"y")  # type: ignore[arg-type]
        with pytest.raises(mp.PageSizeMismatch):
            p.write_page(mp.PageId(int(pid), 2048), b"y")
        with pytest.raises(mp.ReservedPage):
            p.write_page(mp.PageId(1, 1024), b"y")  # a commit record
        with pytest.raises(mp.OutOfBounds):
            p.write_page(mp.PageId(p.page_count, 1024), b"y")
        assert bytes(p.get_page(pid)) == page  # nothing a refused call wrote
    with mp.Pager.open(path) as p:
        assert bytes(p.get_page(pid)) == page


def test_a_batch_seals_the_pages_only_write_page_wrote(core: str, path: str) -> None:
    """Sealed: allocated in the batch, written with write_page only, flushed. Not sealed
    (flushed in the first barrier, as before): a page the batch took a writable view of,
    before or after its flush, and a page allocated before the batch."""
    met: list[str] = []
    with mp.Pager.create(path, 1024) as p:
        old = p.alloc_bulk(40)
        p.free_bulk(old[20:])
        p._core.set_barrier_hook(met.append)
        new = _sealed_batch(p, 6)
        assert met == ["barrier2"]
        assert p._core.sealed_runs() == [(int(new[0]), 6)]
        rec = _records(path, 1024)
        listed = max(rec, key=lambda r: r.generation)
        assert listed.flags == fmt.FLAG_ONE_BARRIER and listed.listed == 1
        for case in ("viewed before", "viewed after", "allocated before"):
            met.clear()
            with p.batch():
                fresh = p.alloc_bulk(2)
                target = old[0] if case == "allocated before" else fresh[0]
                if case == "viewed before":
                    p.get_page_mut(target)[:2] = b"vw"
                p.write_page(target, b"copied")
                p.flush([target])
                if case == "viewed after":
                    p.get_page_mut(target)[:2] = b"vw"
            assert met == ["barrier1", "barrier2"], case
            assert all(not first <= int(target) < first + n for first, n in p._core.sealed_runs())
    check_ok(path)


def test_no_page_is_sealed_without_a_sync(core: str, path: str) -> None:
    with mp.Pager.create(path, 1024, sync=False) as p:
        p.alloc_bulk(20)
        _sealed_batch(p)
        assert p._core.sealed_runs() == []  # sync=False: flushed, never listed


def test_a_rolled_back_batch_seals_nothing(core: str, path: str) -> None:
    with mp.Pager.create(path, 1024) as p:
        p.alloc_bulk(20)
        generation, free = p.generation, p.free_page_count
        with pytest.raises(KeyError), p.batch():
            new = p.alloc_bulk(3)
            for pid in new:
                p.write_page(pid, b"gone")
            p.flush(new)
            raise KeyError
        assert (p.generation, p.free_page_count) == (generation, free)
        assert p._core.sealed_runs() == []
        assert p.get_page_mut(new[0])[:4] == b"gone"  # written all the same, as through views
    check_ok(path)


def test_a_retired_record_and_its_copy(core: str, path: str) -> None:
    """Retiring copies the record in force, listing nothing, into the other slot: both slots
    then hold the same generation, and the copy is in force, for the writer, a snapshot in
    another process, the checker and the other core. It happens once per record, however many
    writes follow, and also on a file reopened with its record still vouching for pages."""
    with mp.Pager.create(path, 1024) as p:
        p.alloc_bulk(20)
        new = _sealed_batch(p)
        generation = p.generation
    with mp.ReadOnlyPager.open(path) as ro:
        assert ro.generation == generation
        assert bytes(ro.get_page(new[0])) == b"\x01" * 1024
    met: list[str] = []
    with mp.Pager.open(path) as p:
        assert p._core.sealed_runs(), "the record in force vouches for data pages"
        p._core.set_barrier_hook(met.append)
        view = p.get_page_mut(new[0])
        assert met == ["retire"] and p.generation == generation and not p._core.sealed_runs()
        view[:5] = b"after"
        p.write_page(new[1], b"again")
        assert met == ["retire"]  # once
        first, second = _records(path, 1024)
        assert first.generation == second.generation == generation
        assert sorted((first.listed, second.listed)) == [0, 1]
        p.flush(new[:2])
    check_ok(path)
    for name in _backend.available():
        with _backend.using(name):
            with mp.ReadOnlyPager.open(path) as ro:
                assert ro.generation == generation
                assert bytes(ro.get_page(new[0]))[:5] == b"after"
            with mp.Pager.open(path) as p:
                assert p.generation == generation and not p._core.sealed_runs()
                assert list(p.iter_allocated_pages())[-4:] == new
    with mp.Pager.open(path) as p:  # and the next commit goes on from the copy
        p.alloc()
        assert p.generation == generation + 1
    check_ok(path)


def test_a_damaged_sealed_page_falls_back_one_commit(core: str, path: str) -> None:
    """A listed page that does not hold its checksum is a commit cut short: the record before
    is in force (the state without the batch), on a writer and a snapshot alike."""
    with mp.Pager.create(path, 1024) as p:
        p.alloc_bulk(20)
        before = list(p.iter_allocated_pages())
        new = _sealed_batch(p)
        generation = p.generation
    with open(path, "r+b") as f:
        f.seek(int(new[2]) * 1024 + 7)
        f.write(b"\xee")
    with mp.ReadOnlyPager.open(path) as ro:
        assert ro.generation == generation - 1
    with mp.Pager.open(path) as p:
        assert p.generation == generation - 1
        assert list(p.iter_allocated_pages()) == before
    check_ok(path)


def test_runs_cover_what_a_commit_lists(core: str, path: str) -> None:
    """Listed entries are runs: the pages of a copy-on-write step and its root's content page
    in a few entries, each with the CRC32C of the whole run."""
    with mp.Pager.create(path, 4096) as p:
        root = p.alloc_protected()
        room = p.alloc_bulk(100)
        p.free_bulk(room[40:])  # room for both steps: no growth, whose commit lists nothing
        new = _sealed_batch(p, 16)
        with p.batch():  # the same step with the root switched
            newer = p.alloc_bulk(16)
            for pid in newer:
                p.write_page(pid, b"n" * 4096)
            p.flush(newer)
            with root.get_mut(p) as w:
                w.page_mut()[:8] = struct.pack("<Q", int(newer[0]))
            p.free_bulk(new)
        ps = p.page_size
    slot = max((1, 2), key=lambda s: _records(path, ps)[s - 1].generation)
    rec = _records(path, ps)[slot - 1]
    with open(path, "rb") as f:
        raw = f.read()
    runs = [
        fmt.LISTED.unpack_from(raw, slot * ps + fmt.LISTED_OFFSET + 16 * i)
        for i in range(rec.listed)
    ]
    covered = {page for first, _crc, run in runs for page in range(first, first + run + 1)}
    assert {int(x) for x in newer} <= covered and len(runs) <= 2
    for first, crc, run in runs:
        assert mp.crc32c(raw[first * ps : (first + run + 1) * ps]) == crc
    assert os.path.getsize(path) >= (max(covered) + 1) * ps


def test_a_reader_that_passed_over_a_record_reads_the_slots_again(
    path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race a retirement opens for readers, made to happen: a reader reads both slots (the
    sealed record of generation G, and G - 1), then the writer retires the record and writes
    a page it listed, then the reader checks the listed pages. It must not settle for G - 1:
    it reads the slots again, finds them changed, and takes the copy of G. (The pure core's
    reader; csrc/snapshot.c's newest() follows the same steps.)"""
    from mappedpages._core_py import snapshot

    with _backend.using("python"), mp.Pager.create(path, 1024) as p:
        p.alloc_bulk(20)
        new = _sealed_batch(p)
        generation = p.generation
        read_slots = snapshot.read_slots
        raced: list[int] = []

        def racing(*args: object, **kwargs: object) -> object:
            slots = read_slots(*args, **kwargs)  # type: ignore[arg-type]
            if not raced:  # between this reader's read of the slots and its checks
                raced.append(1)
                p.write_page(new[0], b"changed")
            return slots

        monkeypatch.setattr(snapshot, "read_slots", racing)
        fd = os.open(path, os.O_RDONLY)
        try:
            assert snapshot.newest_generation(fd, 1024) == generation
        finally:
            os.close(fd)
        assert raced
