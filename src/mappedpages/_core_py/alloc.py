"""Allocation state: taking and releasing pages, growth, kinds and scans, batches and their
rollback. Mirrors csrc/alloc.c; committing is commit.py's."""

from __future__ import annotations

import errno
import os
import re

from .. import format as fmt
from ..errors import CorruptMetadata, DoubleFree, ReservedPage
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
    if page >= c.space_from:
        space(c, page + 1)
    if c.tight and not get_bit(c.written, page):
        _zero_pages(c, page, page + 1)
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


def is_data(c: State, page: int) -> bool:
    return page < c.counts.n and is_used(c, page) and not get_bit(c.internal, page)


def check_freeable(c: State, page: int) -> None:
    c.check_page(page)
    if page in c.reserved or get_bit(c.internal, page):
        raise ReservedPage(f"page {page} is internal to the file format")
    if not is_used(c, page):
        raise DoubleFree(f"page {page} is already free")


def check_length(c: State) -> None:
    """Whether the file still holds every page of the state: another process may have
    truncated it, and then no commit may name those pages, nor may the core touch them through
    the mapping (a SIGBUS). The length comes from lseek, not fstat (format.file_size)."""
    size = fmt.file_size(c.fd)
    if size // c.ps < c.counts.n:
        c.poisoned = True  # its pages are gone: nothing this pager holds can be committed again
        raise CorruptMetadata(
            f"the file is {size} bytes long, shorter than its {c.counts.n} pages: it was truncated"
        )


# One reservation serves the next allocations too: on ext4 a posix_fallocate of 64 new pages
# costs what one of a single page does (5-6 us), which would double the cost of an alloc().
AHEAD_BYTES = 256 * 1024
# Below this much free space (or a quarter of the file system) it counts as nearly full.
TIGHT_BYTES = 64 << 20
_ZEROS = bytes(1 << 16)


# A request larger than this that the free space cannot hold fails at once (csrc/alloc.c,
# reserve(): posix_fallocate would take every free block first, and keep them on ext4).
BIG_RESERVE = 64 << 20


def reserve(fd: int, offset: int, length: int) -> None:
    if length > BIG_RESERVE:
        st = os.fstatvfs(fd)
        if length - BIG_RESERVE > st.f_bavail * st.f_frsize:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    os.posix_fallocate(fd, offset, length)


def _reserve(c: State, offset: int, length: int) -> None:
    try:
        reserve(c.fd, offset, length)
    except OSError as exc:
        c.tight = True
        err = exc.errno or 0
        raise OSError(err, f"reserving disk space (posix_fallocate): {os.strerror(err)}") from None


def _look(c: State) -> None:
    """Whether the file system is nearly full (csrc/alloc.c, look(): ext4 then allocates at
    the write fault, where a block it cannot have is a SIGBUS; pages are then written with
    zeros by pwrite, which fails with ENOSPC instead, before they are used)."""
    try:
        st = os.fstatvfs(c.fd)
    except OSError:
        c.tight = True  # cannot tell: as if it were
        return
    c.tight = st.f_bavail * st.f_frsize < min(st.f_blocks * st.f_frsize // 4, TIGHT_BYTES)


def _zero_pages(c: State, lo: int, hi: int) -> None:
    """Write zeros into pages [lo, hi), all free (so that no state and no snapshot reads them)."""
    off, end = lo * c.ps, hi * c.ps
    try:
        while off < end:
            w = os.pwrite(c.fd, _ZEROS[: min(len(_ZEROS), end - off)], off)
            if w <= 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            off += w
    except OSError as exc:
        c.tight = True
        err = exc.errno or 0
        raise OSError(err, f"writing zeros into new pages (pwrite): {os.strerror(err)}") from None
    for page in range(lo, hi):
        set_bit(c.written, page)


def space(c: State, end: int) -> None:
    """Disk space for the pages below ``end`` (at most the page count), before the core writes
    them or hands them out: a hole of a sparse file written through the mapping on a full disk
    is a SIGBUS, not an error. Pages below ``space_from`` have their space already: allocation
    takes the lowest page it may, so every page below one ever used was used too, and was
    reserved then."""
    start = c.space_from
    if end <= start:
        return
    want = min(max(start + max(1, AHEAD_BYTES // c.ps), end), c.counts.n)
    check_length(c)  # posix_fallocate would lengthen a truncated file again
    _look(c)
    try:
        _reserve(c, start * c.ps, (want - start) * c.ps)
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT) or want == end:
            raise
        want = end  # a nearly full disk: its last pages
        _reserve(c, start * c.ps, (want - start) * c.ps)
    if c.tight:
        try:
            _zero_pages(c, start, want)
        except OSError:
            if want == end:
                raise
            want = end
            _zero_pages(c, start, want)
    c.space_from = want


def _zero_lowest(c: State, k: int) -> None:
    """The ``k`` lowest free pages below ``space_from`` that this open has not written: with
    zeros, when the file system is nearly full, so that a bulk call fails, if it must, before
    it takes any."""
    lo = hi = 0  # a run of pages to write
    taken, written, limit = c.taken, c.written, c.space_from
    pos = c.hint
    while k > 0:
        m = _NOT_FULL.search(taken, pos)
        if m is None:
            break
        byte = m.start()
        value = taken[byte]
        for bit in range(8):
            page = byte * 8 + bit
            if value >> bit & 1:
                continue
            if page >= limit:
                k = 0
                break
            k -= 1
            if not get_bit(written, page):
                if page != hi:
                    if hi > lo:
                        _zero_pages(c, lo, hi)
                    lo = page
                hi = page + 1
            if k == 0:
                break
        pos = byte + 1
    if hi > lo:
        _zero_pages(c, lo, hi)


def space_for(c: State, count: int) -> None:
    """Space for the ``count`` pages allocation takes next (the lowest it may reuse, then pages
    never used), so that a bulk call that cannot have it fails before it takes any."""
    fresh = c.counts.n - c.space_from  # every page from space_from on is free
    below = max(0, c.counts.free - len(c.held) - fresh)
    if count > below:
        space(c, c.space_from + (count - below))
    if c.tight:
        _zero_lowest(c, min(count, below))


def top_bit(bits: bytearray) -> int:
    """One past the highest bit set (0 when there is none)."""
    end = len(bits.rstrip(b"\0"))
    return (end - 1) * 8 + bits[end - 1].bit_length() if end else 0


def space_known(c: State) -> None:
    """After a load: the pages that have space are those up to the highest in use or pending."""
    c.space_from = min(top_bit(c.taken), c.counts.n)


def grow(c: State, needed: int) -> None:
    """Extend the file so that ``needed`` more pages exist (docs/FORMAT.md, "Growth")."""
    old = c.counts.n
    new = c.geo.grow_target(old, needed)
    if new > fmt.PAGE_LIMIT or new * c.ps > (1 << 63) - 1:
        raise OSError(27, "File too large: growing the file")  # EFBIG
    size = new * c.ps
    check_length(c)  # growing a truncated file would hide that its pages are gone
    more = bitmap_bytes(c, new) - len(c.taken)
    if more > 0:  # the memory first: a file too large for it stays as it was
        for bits in (c.taken, c.internal, c.pending, c.written):
            bits.extend(bytes(more))
    if c.prealloc:  # the pages' space now; space_from moves on as they are used (space())
        reserve(c.fd, c.space_from * c.ps, size - c.space_from * c.ps)
    elif fmt.file_size(c.fd) < size:
        os.ftruncate(c.fd, size)
    from .open import map_file  # the mapping follows the file

    map_file(c, new)
    c.counts.n = new
    c.counts.free += new - old
    c.grew = True


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
        for bits in (c.taken, c.internal, c.pending, c.written):
            del bits[keep:]
    if committed.slot_count != c.counts.slot_count:
        del c.slot_page[committed.slot_count :]
        del c.slot_crc[committed.slot_count :]
        keep = (committed.slot_count + 7) // 8
        del c.slot_bits[keep:]
        del c.verified[keep:]
    c.counts = committed.copy()
    c.space_from = min(c.space_from, committed.n)  # pages a growth added are gone
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
    c.viewed.clear()
    c.staged.clear()
    c.blocks.clear()
    c.grew = False
    c.forced = False
    c.force_checkpoint = False
    c.checkpointed = False
    c.no_undo = False
    c.cut = False
    c.flush_lo = c.flush_hi = 0
    c.flush_everything = False
    c.sealed.clear()
