"""Opening damaged, truncated and foreign files; falling back to the commit before."""

from __future__ import annotations

import os
import struct
import warnings

import pytest

import mappedpages as mp
from helpers import check_ok
from mappedpages import format as fmt
from mappedpages.checker import check_file


def _patch(path: str, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def _read(path: str, offset: int, size: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(size)


def _two_commits(path: str) -> tuple[list[mp.PageId], list[mp.PageId]]:
    with mp.Pager.create(path, 1024) as p:
        first = p.alloc_bulk(5)
        second = first + p.alloc_bulk(3)
    return first, second


def test_foreign_files(core: str, path: str) -> None:
    cases = {
        "empty": b"",
        "short": b"MAPPEDPG",
        "text": b"hello world\n" * 1000,
        "zeros": bytes(8192),
    }
    for content in cases.values():
        with open(path, "wb") as f:
            f.write(content)
        with pytest.raises(mp.CorruptSuperblock):
            mp.Pager.open(path)
        os.unlink(path)


def test_bad_magic_version_and_checksum(core: str, path: str) -> None:
    mp.Pager.create(path, 1024).close()
    original = _read(path, 0, 64)
    for offset, data in [
        (0, b"X"),
        (8, struct.pack("<I", 3)),
        (12, struct.pack("<I", 4096)),
        # flipped, not overwritten: these bytes hold the random file id, which may already
        # hold any given value (the file id is covered by the identity's checksum too)
        (20, bytes([original[20] ^ 1])),
        (40, bytes([original[40] ^ 1])),
    ]:
        assert _read(path, offset, len(data)) != data
        _patch(path, offset, data)
        with pytest.raises(mp.CorruptSuperblock):
            mp.Pager.open(path)
        _patch(path, 0, original)
    # a wrong version with a correct checksum is reported as incompatible
    head = bytearray(original)
    head[8:12] = struct.pack("<I", 99)
    head[60:64] = struct.pack("<I", mp.crc32c(bytes(head[:60])))
    _patch(path, 0, bytes(head))
    with pytest.raises(mp.CorruptSuperblock, match="version"):
        mp.Pager.open(path)


@pytest.mark.parametrize("keep", [0, 100, 1023, 1024, 2048, 3071])
def test_truncated_files(core: str, path: str, keep: int) -> None:
    mp.Pager.create(path, 1024).close()
    os.truncate(path, keep)
    with pytest.raises((mp.CorruptSuperblock, mp.CorruptMetadata)):
        mp.Pager.open(path)


def test_truncated_below_page_count(core: str, path: str) -> None:
    with mp.Pager.create(path, 1024) as p:
        p.alloc_bulk(100)
        count = p.page_count
    os.truncate(path, (count - 1) * 1024)
    with pytest.raises(mp.CorruptMetadata):
        mp.Pager.open(path)


def _record(path: str, slot: int) -> fmt.Record:
    """The header of record slot ``slot`` of a 1 KiB-page file."""
    return fmt.Record(*fmt.RECORD.unpack(_read(path, (1 + slot) * 1024, fmt.RECORD.size)))


def _newest(path: str) -> tuple[int, fmt.Record]:
    """The record slot in force and its header."""
    report = check_file(path, mp.crc32c)
    return report.record, _record(path, report.record)


def _forge(path: str, slot: int, log: bytes | None = None, **fields: int) -> None:
    """Rewrite a record slot's fields (and log) with every checksum made to match."""
    ps = 1024
    raw = bytearray(_read(path, (1 + slot) * ps, ps))
    rec = fmt.Record(*fmt.RECORD.unpack_from(raw, 0))._replace(**fields)
    listed = bytes(raw[fmt.LISTED_OFFSET : fmt.LISTED_OFFSET + 16 * rec.listed])
    old_log = bytes(raw[fmt.LOG_OFFSET : fmt.LOG_OFFSET + rec.log_len])
    _patch(
        path,
        (1 + slot) * ps,
        fmt.pack_record(ps, rec, listed, old_log if log is None else log, mp.crc32c),
    )


def test_a_torn_newest_record_means_the_commit_before(core: str, path: str) -> None:
    first, _second = _two_commits(path)
    slot, _ = _newest(path)
    _patch(path, (1 + slot) * 1024 + 8, b"\x00" * 8)  # its generation: the checksum fails
    report = check_file(path, mp.crc32c)
    assert report.ok and any("does not read" in n for n in report.notes)  # a crash looks so
    with mp.Pager.open(path) as p:  # the previous commit, whole
        assert list(p.iter_allocated_pages()) == first
        p.alloc()  # and the pager commits on top of it, into the torn slot
    check_ok(path)


def test_a_damaged_older_record_is_harmless(core: str, path: str) -> None:
    _first, second = _two_commits(path)
    slot, _ = _newest(path)
    _patch(path, (2 - slot) * 1024 + 300, b"\x55")
    with mp.Pager.open(path) as p:
        assert list(p.iter_allocated_pages()) == second
        p.alloc()  # overwrites the damaged record with the next commit
    check_ok(path)


def test_both_records_bad(core: str, path: str) -> None:
    _two_commits(path)
    _patch(path, 1024 + 30, b"\x55")
    _patch(path, 2048 + 30, b"\x55")
    with pytest.raises(mp.CorruptMetadata):
        mp.Pager.open(path)
    assert not check_file(path, mp.crc32c).ok


def test_a_one_barrier_commit_cut_short_is_passed_over_and_erased(core: str, path: str) -> None:
    with mp.Pager.create(path, 1024) as p:
        ppid = p.alloc_protected()
        with ppid.get_mut(p) as w:
            w.page_mut()[:3] = b"new"  # one barrier: the record lists the new content page
    slot, rec = _newest(path)
    assert rec.flags == fmt.FLAG_ONE_BARRIER and rec.listed == 1
    (page, _crc, _run) = fmt.LISTED.unpack_from(
        _read(path, (1 + slot) * 1024 + fmt.LISTED_OFFSET, 16)
    )
    _patch(path, page * 1024, b"???")  # the content page did not land
    report = check_file(path, mp.crc32c)
    assert report.ok and any("did not all land" in n for n in report.notes)
    with mp.Pager.open(path) as p:
        assert bytes(p.get_protected_page(ppid)[:3]) == bytes(3)  # the state before the write
    assert not any(_read(path, (1 + slot) * 1024, 1024))  # erased by the writer on open
    check_ok(path)


def test_damage_to_blocks_both_records_name_is_an_error(core: str, path: str) -> None:
    with mp.Pager.create(path, 1024) as p:
        before = p.alloc_bulk(9 * 2624)  # pages in ten bitmap leaves
        p._core.checkpoint_now()  # a checkpoint
        p.free(before[0])  # a log-only commit on top: its record names the same trees
    _slot, rec = _newest(path)
    _patch(path, rec.bitmap_root * 1024 + 100, b"\xee")  # the trees' root
    report = check_file(path, mp.crc32c)
    assert not report.ok and any("bitmap" in x for x in report.problems)
    with pytest.raises(mp.CorruptMetadata):
        mp.Pager.open(path)


def test_damage_only_the_newest_commit_has_falls_back_with_a_warning(core: str, path: str) -> None:
    with mp.Pager.create(path, 1024) as p:
        p.alloc_bulk(40)
        p.alloc_bulk(9 * 2624)  # one log word: no checkpoint yet
        p.free_bulk(list(p.iter_allocated_pages())[:40:2])  # holes one page wide
        before = list(p.iter_allocated_pages())
        p._core.checkpoint_now()  # its blocks land in the holes, more than 8 runs: two barriers
    _slot, rec = _newest(path)
    assert not rec.flags and rec.checkpoint == rec.generation
    _patch(path, rec.bitmap_root * 1024 + 100, b"\xee")  # only this state has the new root
    report = check_file(path, mp.crc32c)
    assert not report.ok  # damage, not a crash: its blocks were durable before its record
    assert any(f"generation {rec.generation - 1}" in n and "whole" in n for n in report.notes)
    with pytest.warns(mp.RecoveryWarning, match="damaged"), mp.Pager.open(path) as p:
        assert p.generation == rec.generation - 1
        assert list(p.iter_allocated_pages()) == before  # the commit before, whole
        p.alloc()  # and the next commit replaces the damaged record
    check_ok(path)


@pytest.mark.parametrize(
    "forge",
    ["alloc-used", "free-free", "beyond", "slot-data-page", "slot-beyond", "gen-order", "junk"],
)
def test_a_forged_log_is_rejected(core: str, path: str, forge: str) -> None:
    with mp.Pager.create(path, 1024) as p:
        data = p.alloc()  # the newest record's log: GEN, DATA
        p.alloc_protected()
    slot, rec = _newest(path)
    words = [w for (w,) in fmt.WORD.iter_unpack(_read(path, (1 + slot) * 1024 + 256, rec.log_len))]
    gen = fmt.gen_word(rec.generation)
    bad = {
        "alloc-used": [gen, fmt.run_word(fmt.DATA, int(data), 1)],
        "free-free": [gen, fmt.run_word(fmt.FREE_DATA, rec.page_count - 1, 1)],
        "beyond": [gen, fmt.run_word(fmt.DATA, rec.page_count - 1, 4)],
        "slot-data-page": [gen, *fmt.slot_words(0, int(data), 0)],
        "slot-beyond": [gen, *fmt.slot_words(rec.slot_count + 5, 0, 0)],
        "gen-order": [fmt.gen_word(rec.generation + 1), fmt.run_word(fmt.DATA, 15, 1)],
        "junk": [gen, 0xF << 60],
    }[forge]
    del words
    _forge(path, slot, log=b"".join(fmt.WORD.pack(w) for w in bad))
    assert not check_file(path, mp.crc32c).ok
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:  # the commit before (which did not have the forged words), or an error
            with mp.Pager.open(path) as p:
                assert p.generation == rec.generation - 1
            assert any(issubclass(w.category, mp.RecoveryWarning) for w in caught)
        except (mp.CorruptMetadata, mp.CorruptProtectedDirectory):
            pass


@pytest.mark.parametrize("field", ["free_count", "data_count", "slots_used", "page_count"])
def test_counts_that_lie_are_rejected(core: str, path: str, field: str) -> None:
    first, _ = _two_commits(path)
    slot, rec = _newest(path)
    lie = {"free_count": rec.free_count + 1, "data_count": rec.data_count - 1,
           "slots_used": 1, "page_count": 1 << 40}[field]  # fmt: skip
    _forge(path, slot, **{field: lie})
    assert not check_file(path, mp.crc32c).ok or field == "page_count"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:  # the commit before, with a warning, or (the file is too short for it) an error
            with mp.Pager.open(path) as p:
                assert list(p.iter_allocated_pages()) == first
            assert any(issubclass(w.category, mp.RecoveryWarning) for w in caught)
        except mp.CorruptMetadata:
            assert field == "page_count"
    _forge(path, slot, **{field: getattr(rec, field)})
    check_ok(path)


def test_random_bit_flips_never_crash(core: str, path: str) -> None:
    import random

    with mp.Pager.create(path, 1024, sync=False) as p:
        p.alloc_bulk(300)
    with open(path, "rb") as f:
        pristine = f.read()
    rng = random.Random(1234)
    for _ in range(200):
        data = bytearray(pristine)
        for _ in range(rng.randint(1, 8)):
            pos = rng.randrange(0, 3 * 1024)
            data[pos] ^= 1 << rng.randrange(8)
        with open(path, "wb") as f:
            f.write(data)
        try:
            with mp.Pager.open(path) as p:
                list(p.iter_allocated_pages())
                p.alloc()
        except mp.MappedPageError:
            pass


def test_a_file_at_the_last_generation_refuses_to_commit(core: str, path: str) -> None:
    # 2^60 commits take centuries: only a forged file is here, and a commit past it would
    # write a record that no reader accepts (its state lost); the commit refuses instead
    _two_commits(path)
    slot, rec = _newest(path)
    last = fmt.GENERATION_LIMIT - 1
    raw = _read(path, (1 + slot) * 1024 + fmt.LOG_OFFSET, rec.log_len)
    words = [w for (w,) in fmt.WORD.iter_unpack(raw)]
    newest_gen = (fmt.GEN << fmt.KIND_SHIFT) | rec.generation
    words[words.index(newest_gen)] = (fmt.GEN << fmt.KIND_SHIFT) | last
    _forge(path, slot, log=b"".join(fmt.WORD.pack(w) for w in words), generation=last)
    with mp.Pager.open(path) as p:
        assert p.generation == fmt.GENERATION_LIMIT - 1
        with pytest.raises(ValueError, match="last generation"):
            p.alloc()
        with pytest.raises(mp.Unavailable):
            p.alloc()
    with mp.Pager.open(path) as p:  # the last commit, unharmed
        assert p.generation == fmt.GENERATION_LIMIT - 1
        assert len(list(p.iter_allocated_pages())) == 8
    check_ok(path)
