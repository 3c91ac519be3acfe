"""Allocation state: taking and releasing pages, growth, kinds and scans, batches and their
rollback. Mirrors csrc/alloc.c; committing is commit.py's."""

from __future__ import annotations

import os
import re

from .. import format as fmt
from ..errors import DoubleFree, ReservedPage
from . import log, pending
from .state import State, clear_bit, get_bit, set_bit

_NOT_FULL = re.compile(rb"[^\xff]")

FREE, DATA, INTERNAL, PENDING = 0, 1, 2, 3  # what kind() returns


def bitmap_bytes(c: State, n: int) -> int:
    """Bytes each in-memory bitmap has for ``n`` pages: whole leaves."""
    return max(1, c.geo.bitmap_leaves(n)) * c.geo.leaf_bytes


def find_free(c: State) -> int:
    """The lowest page that is free and may be reused, or -1."""
    m = _NOT_FULL.search(c.taken, c.hint)
    if m is None:
        c.hint = len(c.taken)
        return -1
    byte = m.start()
    c.hint = byte
    value = c.taken[byte]
    page = byte * 8 + ((~value) & (value + 1)).bit_length() - 1
    return page if page < c.counts.n else -1


def take(c: State, page: int, internal: bool) -> None:
    """Make a free page a data page (or an internal one) in use, and log it."""
    set_bit(c.taken, page)
    counts = c.counts
    counts.free -= 1
    if internal:
        set_bit(c.internal, page)
    else:
        counts.data += 1
    c.born.add(page)
    log.run(c, fmt.INTERNAL if internal else fmt.DATA, page)


def take_lowest(c: State, internal: bool) -> int:
    """Take the lowest page that may be reused, growing the file when there is none."""
    page = find_free(c)
    if page < 0:
        grow(c, 1)
        page = find_free(c)
    take(c, page, internal)
    return page


def release(c: State, page: int) -> None:
    """Free a page in use, and log it. One the last commit had stays pending: it may not be
    reused before no snapshot can read it (pending.py)."""
    internal = get_bit(c.internal, page)
    log.run(c, fmt.FREE_INTERNAL if internal else fmt.FREE_DATA, page)
    counts = c.counts
    counts.free += 1
    if internal:
        clear_bit(c.internal, page)
    else:
        counts.data -= 1
    if page in c.born:  # no committed state has it
        c.born.discard(page)
        clear_bit(c.taken, page)
        c.hint = min(c.hint, page >> 3)
    else:
        pending.hold(c, page, c.gen + 1)


def is_used(c: State, page: int) -> bool:
    return get_bit(c.taken, page) and not get_bit(c.pending, page)


def kind(c: State, page: int) -> int:
    c.check_page(page)
    if not is_used(c, page):
        return PENDING if get_bit(c.pending, page) else FREE
    return INTERNAL if get_bit(c.internal, page) else DATA


def check_freeable(c: State, page: int) -> None:
    c.check_page(page)
    if page in c.reserved or get_bit(c.internal, page):
        raise ReservedPage(f"page {page} is internal to the file format")
    if not is_used(c, page):
        raise DoubleFree(f"page {page} is already free")


def grow(c: State, needed: int) -> None:
    """Extend the file so that ``needed`` more pages exist (docs/FORMAT.md, "Growth")."""
    old = c.counts.n
    new = c.geo.grow_target(old, needed)
    if new > fmt.PAGE_LIMIT or new * c.ps > (1 << 63) - 1:
        raise OSError(27, "File too large: growing the file")  # EFBIG
    size = new * c.ps
    more = bitmap_bytes(c, new) - len(c.taken)
    if more > 0:  # the memory first: a file too large for it stays as it was
        for bits in (c.taken, c.internal, c.pending):
            bits.extend(bytes(more))
    if c.prealloc:
        os.posix_fallocate(c.fd, 0, size)
    elif os.fstat(c.fd).st_size < size:
        os.ftruncate(c.fd, size)
    c.counts.n = new
    c.counts.free += new - old
    c.grew = True
    from .open import map_file  # the mapping follows the file

    map_file(c, new)


def scan(c: State, start: int, limit: int) -> list[int]:
    """Up to ``limit`` data pages from ``start`` on, ascending."""
    out: list[int] = []
    taken, internal, pend, n = c.taken, c.internal, c.pending, c.counts.n
    page = max(start, 0)
    while page < n and len(out) < limit:
        byte = page >> 3
        bits = taken[byte] & ~internal[byte] & ~pend[byte] & 0xFF
        bits >>= page & 7
        if not bits:
            page = (byte + 1) * 8
            continue
        if bits & 1:
            out.append(page)
        page += 1
    return out


def begin(c: State) -> None:
    c.writer()
    pending.release(c)
    c.in_batch = True


def rollback(c: State) -> None:
    """Return to the last committed state: undo this commit's log words, latest first."""
    c.in_batch = False
    gen = c.gen + 1
    words = log.entries(bytes(c.log[c.words_start :])) if c.words_start >= 0 else iter(())
    for kind_, a, b, _ in reversed(list(words)):
        if kind_ == fmt.SLOT:
            slot, page, crc = c.undo_slots.pop()
            _restore_slot(c, slot, page, crc)
        elif kind_ in (fmt.DATA, fmt.INTERNAL):
            for page in range(a, a + b):
                clear_bit(c.taken, page)
                clear_bit(c.internal, page)
        elif kind_ in (fmt.FREE_DATA, fmt.FREE_INTERNAL):
            for page in range(a, a + b):
                if c.held.get(page) == gen:
                    del c.held[page]
                    clear_bit(c.pending, page)
                set_bit(c.taken, page)
                if kind_ == fmt.FREE_INTERNAL:
                    set_bit(c.internal, page)
    while c.fifo and c.fifo[-1][0] == gen:
        c.fifo.pop()
    committed = c.committed
    if committed.n != c.counts.n:  # the batch grew the file: the new pages are all free again
        keep = bitmap_bytes(c, committed.n)
        for bits in (c.taken, c.internal, c.pending):
            del bits[keep:]
    if committed.slot_count != c.counts.slot_count:
        del c.slot_page[committed.slot_count :]
        del c.slot_crc[committed.slot_count :]
        keep = (committed.slot_count + 7) // 8
        del c.slot_bits[keep:]
        del c.verified[keep:]
    c.counts = committed.copy()
    for tree, leaf in c.undo_dirty:
        tree.dirty.discard(leaf)
    clear_commit(c)
    del c.log[c.log_committed :]
    c.hint = 0
    c.slot_hint = 0


def _restore_slot(c: State, slot: int, page: int, crc: int) -> None:
    if slot < len(c.slot_page):
        c.slot_page[slot], c.slot_crc[slot] = page, crc
        (set_bit if page else clear_bit)(c.slot_bits, slot)
        clear_bit(c.verified, slot)


def clear_commit(c: State) -> None:
    """Forget what the commit being prepared was to do (after it, or a rollback)."""
    c.words_start = -1
    c.undo_slots.clear()
    c.undo_dirty.clear()
    c.born.clear()
    c.staged.clear()
    c.blocks.clear()
    c.grew = False
    c.forced = False
    c.force_checkpoint = False
    c.checkpointed = False
