"""Protected pages: the directory's slots, each naming its content page and that page's
CRC32C. Mirrors csrc/directory.c."""

from __future__ import annotations

import re
from collections.abc import Sequence

from ..errors import CorruptProtectedDirectory, DoubleFree, OutOfBounds
from . import alloc, log
from .crc import crc32c as _py_crc32c
from .state import State, clear_bit, get_bit, set_bit

_NOT_FULL = re.compile(rb"[^\xff]")
_zero_crc: dict[int, int] = {}


def zero_crc(page_size: int) -> int:
    """CRC32C of a page of zeros (computed once per page size)."""
    if page_size not in _zero_crc:
        _zero_crc[page_size] = _py_crc32c(bytes(page_size))
    return _zero_crc[page_size]


def is_used(c: State, slot: int) -> bool:
    return 0 <= slot < c.counts.slot_count and get_bit(c.slot_bits, slot)


def check_used(c: State, slot: int) -> None:
    if not is_used(c, slot):
        raise OutOfBounds(f"protected page {slot} is not allocated")


def _lowest_free_slot(c: State) -> int:
    bits = c.slot_bits
    m = _NOT_FULL.search(bits, c.slot_hint)
    if m is None:
        c.slot_hint = len(bits)
        return len(bits) * 8
    byte = m.start()
    c.slot_hint = byte
    value = bits[byte]
    return byte * 8 + ((~value) & (value + 1)).bit_length() - 1


def _set_slot(c: State, slot: int, page: int, crc: int) -> None:
    """Point ``slot`` at ``page``, logging it and keeping what it was for a rollback."""
    c.undo_slots.append((slot, c.slot_page[slot], c.slot_crc[slot]))
    c.slot_page[slot] = page
    c.slot_crc[slot] = crc
    log.slot(c, slot, page, crc)


def palloc(c: State, n: int) -> list[int]:
    """``n`` new protected pages, each with a page of zeros: per slot INTERNAL, SLOT."""
    ps, zero = c.ps, bytes(c.ps)
    crc = zero_crc(ps)
    alloc.check_length(c)  # its pages are read and written through the mapping
    out: list[int] = []
    for _ in range(n):
        page = alloc.take_lowest(c, True)
        view = c.mm
        off = page * ps
        # A page that reads as zeros is not written again: space reserved by growth and never
        # written would otherwise have the file system convert its extent at the sync. It is
        # listed all the same, so that zeros written but not yet synced land with the commit.
        if view[off : off + ps] != zero:
            view[off : off + ps] = zero
        stage(c, page)
        slot = _lowest_free_slot(c)
        counts = c.counts
        if slot >= counts.slot_count:
            _extend(c, slot + 1)
        set_bit(c.slot_bits, slot)
        set_bit(c.verified, slot)
        counts.slots_used += 1
        _set_slot(c, slot, page, crc)
        out.append(slot)
    return out


def _extend(c: State, count: int) -> None:
    grow = count - c.counts.slot_count
    c.slot_page.extend([0] * grow)
    c.slot_crc.extend([0] * grow)
    need = (count + 7) // 8
    if len(c.slot_bits) < need:
        c.slot_bits.extend(bytes(need - len(c.slot_bits)))
        c.verified.extend(bytes(need - len(c.verified)))
    c.counts.slot_count = count


def pfree(c: State, slots: Sequence[int]) -> None:
    """Free every slot (validated first: all in use, none twice): per slot SLOT, FREE_INTERNAL."""
    seen: set[int] = set()
    for slot in slots:
        check_used(c, slot)
        if slot in seen:
            raise DoubleFree(f"protected page {slot} appears twice")
        seen.add(slot)
    for slot in slots:
        page = c.slot_page[slot]
        _set_slot(c, slot, 0, 0)
        clear_bit(c.slot_bits, slot)
        clear_bit(c.verified, slot)
        c.counts.slots_used -= 1
        c.slot_hint = min(c.slot_hint, slot >> 3)
        alloc.release(c, page)


def pwrite(c: State, slot: int, content: bytes) -> None:
    """Make ``content`` the slot's content in this commit: written to a page no snapshot reads
    (in place when this commit made the slot's page already): INTERNAL, SLOT, FREE_INTERNAL."""
    check_used(c, slot)
    if len(content) != c.ps:
        raise ValueError(f"a protected page holds {c.ps} bytes, not {len(content)}")
    alloc.check_length(c)  # the content goes through the mapping
    crc = _py_crc32c(content)
    old = c.slot_page[slot]
    if old in c.born:
        _write(c, old, content)
        _set_slot(c, slot, old, crc)
        return
    page = alloc.take_lowest(c, True)
    _write(c, page, content)
    stage(c, page)
    _set_slot(c, slot, page, crc)
    set_bit(c.verified, slot)
    alloc.release(c, old)


def move_slot(c: State, slot: int) -> None:
    """A protected write of the slot's own content, checked first (so that damage is not
    given a valid checksum): it moves to the lowest page free to reuse."""
    page = c.slot_page[slot]
    content = bytes(c.mm[page * c.ps : (page + 1) * c.ps])
    if _py_crc32c(content) != c.slot_crc[slot]:
        raise CorruptProtectedDirectory(
            f"protected page {slot}: its content (page {page}) does not match its checksum"
        )
    pwrite(c, slot, content)


def _write(c: State, page: int, content: bytes) -> None:
    off = page * c.ps
    c.mm[off : off + c.ps] = content


def stage(c: State, page: int) -> None:
    """A page written for this commit. Only pages taken in it are staged (a page written again
    is not staged twice), so the list holds each once."""
    c.staged.append(page)


def ppage(c: State, slot: int) -> int:
    """The page holding the slot's content, checked against its CRC32C on first use."""
    check_used(c, slot)
    page = c.slot_page[slot]
    if not get_bit(c.verified, slot):
        off = page * c.ps
        if _py_crc32c(c.mm[off : off + c.ps]) != c.slot_crc[slot]:
            raise CorruptProtectedDirectory(
                f"protected page {slot}: its content (page {page}) does not match its checksum"
            )
        set_bit(c.verified, slot)
    return page


def pscan(c: State, start: int, limit: int) -> list[int]:
    """Up to ``limit`` slots in use from ``start`` on, ascending."""
    out: list[int] = []
    bits, count = c.slot_bits, c.counts.slot_count
    slot = max(start, 0)
    while slot < count and len(out) < limit:
        byte = bits[slot >> 3] >> (slot & 7)
        if not byte:
            slot = (slot | 7) + 1
            continue
        if byte & 1:
            out.append(slot)
        slot += 1
    return out
