"""Opening damaged, truncated and foreign files; falling back to the other metadata copy."""

from __future__ import annotations

import os
import struct

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


def _active(path: str) -> int:
    return struct.unpack_from("<I", _read(path, 516, 4))[0]


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
        (8, struct.pack("<I", 2)),
        (12, struct.pack("<I", 4096)),
        (20, b"\x01"),
    ]:
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


def test_corrupt_active_metadata_falls_back(core: str, path: str) -> None:
    first, _second = _two_commits(path)
    active = _active(path)
    _patch(path, (1 + active) * 1024 + 200, b"\xff\x00\xff")  # damage the active copy
    assert not check_file(path, mp.crc32c).ok
    with mp.Pager.open(path) as p:  # the previous commit comes back, whole
        assert list(p.iter_allocated_pages()) == first
        p.alloc()  # and the pager commits on top of it
    check_ok(path)


def test_corrupt_inactive_metadata_is_harmless(core: str, path: str) -> None:
    _first, second = _two_commits(path)
    inactive = 1 - _active(path)
    _patch(path, (1 + inactive) * 1024 + 200, b"\xff\x00\xff")
    with mp.Pager.open(path) as p:
        assert list(p.iter_allocated_pages()) == second
        p.alloc()  # overwrites the damaged copy with the next commit
    check_ok(path)


def test_torn_selector_falls_back_to_newest_valid(core: str, path: str) -> None:
    _first, second = _two_commits(path)
    _patch(path, 520, b"\x00" * 8)  # selector record checksum no longer matches
    with mp.Pager.open(path) as p:
        assert list(p.iter_allocated_pages()) == second


def test_both_metadata_copies_bad(core: str, path: str) -> None:
    _two_commits(path)
    _patch(path, 1024 + 300, b"\x55")
    _patch(path, 2048 + 300, b"\x55")
    with pytest.raises(mp.CorruptMetadata):
        mp.Pager.open(path)


def _forge_active_meta(path: str, offset: int, value: int) -> None:
    """Set a u64 field of the active metadata copy, with valid checksums everywhere, so that
    validation has to look past the checksums to find the lie."""
    base = (1 + _active(path)) * 1024
    block = bytearray(_read(path, base, 1024))
    block[offset : offset + 8] = struct.pack("<Q", value)
    block[4:8] = struct.pack("<I", mp.crc32c(bytes(block[8:])))
    _patch(path, base, bytes(block))
    sel = bytearray(_read(path, 512, 24))
    sel[16:20] = block[4:8]
    sel[20:24] = struct.pack("<I", mp.crc32c(bytes(sel[:20])))
    _patch(path, 512, bytes(sel))


def test_free_count_lie_is_rejected(core: str, path: str) -> None:
    _two_commits(path)
    _forge_active_meta(path, 40, 999)
    with pytest.raises(mp.CorruptMetadata):
        mp.Pager.open(path)
    assert not check_file(path, mp.crc32c).ok


@pytest.mark.parametrize("huge", [2**40, 2**63, 2**64 - 1])
def test_huge_page_count_is_rejected(core: str, path: str, huge: int) -> None:
    _two_commits(path)
    _forge_active_meta(path, 32, huge)
    with pytest.raises(mp.CorruptMetadata):
        mp.Pager.open(path)
    assert not check_file(path, mp.crc32c).ok


def test_damaged_current_group_copy_is_detected(core: str, path: str) -> None:
    geo = fmt.Geometry(1024)
    with mp.Pager.create(path, 1024, sync=False) as p:
        p.alloc_bulk(geo.c0 + 100)  # creates bitmap group 1
        p.alloc()  # the second write of group 1 lands in its other copy
    start = geo.group_start(1)
    gens = [struct.unpack_from("<Q", _read(path, (start + i) * 1024 + 8, 8))[0] for i in (0, 1)]
    newest = gens.index(max(gens))
    _patch(path, (start + newest) * 1024 + 500, b"\xaa")
    # the older copy disagrees with the committed free count: corruption, reported
    with pytest.raises(mp.CorruptMetadata):
        mp.Pager.open(path)
    assert not check_file(path, mp.crc32c).ok


def test_leftover_group_copy_is_ignored_and_overwritten(core: str, path: str) -> None:
    """A group copy from a commit that never completed must never become current later."""
    geo = fmt.Geometry(1024)
    with mp.Pager.create(path, 1024, sync=False) as p:
        p.alloc_bulk(geo.c0 + 100)
        committed = list(p.iter_allocated_pages())
    start = geo.group_start(1)
    gen = struct.unpack_from("<Q", _read(path, 520, 8))[0]
    # forge an uncommitted future copy of group 1 that frees everything
    copies = [struct.unpack_from("<Q", _read(path, (start + i) * 1024 + 8, 8))[0] for i in (0, 1)]
    target = copies.index(min(copies))
    block = bytearray(1024)
    block[0:4] = b"MPBG"
    block[8:16] = struct.pack("<Q", gen + 1)
    block[16:24] = struct.pack("<Q", start + target)
    block[32] = 0b11
    block[4:8] = struct.pack("<I", mp.crc32c(bytes(block[8:])))
    _patch(path, (start + target) * 1024, bytes(block))
    with mp.Pager.open(path, sync=False) as p:
        assert list(p.iter_allocated_pages()) == committed
        p.alloc()  # a commit at generation gen + 1 must not resurrect the forged copy
        expected = list(p.iter_allocated_pages())
    with mp.Pager.open(path) as p:
        assert list(p.iter_allocated_pages()) == expected
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
