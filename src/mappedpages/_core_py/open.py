"""Opening a file as its writer: choosing the record in force, validating the whole state it
names, and building the state in memory; the mapping. Mirrors csrc/open.c."""

from __future__ import annotations

import contextlib
import mmap
import os
import struct
import warnings
from array import array
from collections import deque

from .. import format as fmt
from .._v1 import V1State
from ..errors import (
    CorruptMetadata,
    CorruptProtectedDirectory,
    MappedPageError,
    RecoveryWarning,
)
from ..format import Header
from . import log, sync
from .alloc import bitmap_bytes, space_known
from .crc import crc32c
from .state import Counts, State, Tree, get_bit
from .tree import BITMAP, DIRECTORY, Reader


def advise(mm: mmap.mmap, random: bool) -> None:
    """Read-around off (``random``) while the trees are walked, back on for users' pages: the
    walk touches a few scattered pages, and read-around of each would read or zero-fill far
    more than the trees, on a large file most of it (docs/DESIGN.md, "Opening a large file")."""
    with contextlib.suppress(OSError, AttributeError, ValueError):  # advice only
        mm.madvise(mmap.MADV_RANDOM if random else mmap.MADV_NORMAL)


def map_file(c: State, n: int) -> None:
    # mmap.mmap keeps a dup of the descriptor it is given, and a dup shares the writer's
    # flock: a view outliving close() would keep the file locked. A separate open file
    # description of the same file maps the same pages without sharing the lock.
    access = mmap.ACCESS_WRITE if c.writable else mmap.ACCESS_READ
    flags = (os.O_RDWR if c.writable else os.O_RDONLY) | os.O_CLOEXEC
    try:
        fd = os.open(f"/proc/self/fd/{c.fd}", flags)
    except OSError:
        fd = os.dup(c.fd)
    try:
        c.mm = mmap.mmap(fd, n * c.ps, access=access)
    finally:
        os.close(fd)


def read_slots(
    fd: int, header: Header, geo: fmt.Geometry, *, stable: bool = False
) -> list[fmt.RecordSlot]:
    """Both record slots. ``stable`` (a reader beside a running writer): as they were at one
    instant, the first read again after the second and unchanged (csrc/snapshot.c, newest())."""
    ps = header.page_size
    while True:
        raws = [os.pread(fd, geo.block, page * ps) for page in header.records]
        if not stable or os.pread(fd, geo.block, header.records[0] * ps) == raws[0]:
            break
    return [
        fmt.read_record_slot(raw, i, page, geo, header.size, crc32c)
        for i, (page, raw) in enumerate(zip(header.records, raws, strict=True))
    ]


def open_file(c: State, wanted: int) -> None:
    """Open as writer (or for the checker's oracle): the newest record whose whole state
    validates; an older one, with a warning, when that fails."""
    header = Header(c.fd, wanted, crc32c)
    c.ps = header.page_size
    c.geo = geo = fmt.Geometry(c.ps)
    c.record_pages = header.records
    c.reserved = header.reserved
    c.file_id = header.file_id
    slots = read_slots(c.fd, header, geo)
    good, passed = fmt.in_force(
        slots, c.ps, header.size, lambda off, n: os.pread(c.fd, n, off), crc32c
    )
    if not good:
        raise CorruptMetadata("no valid commit record")
    failure: MappedPageError | None = None
    for slot in good:
        try:
            load_state(c, slot)
        except MappedPageError as exc:
            failure = failure or exc
            continue
        finally:
            if c.mm is not None:
                advise(c.mm, False)
        if failure is not None:
            warnings.warn(
                RecoveryWarning(
                    f"the newest commit's state is damaged ({failure}); opened the commit "
                    f"before it, generation {c.gen}"
                ),
                stacklevel=4,
            )
        else:
            for s in slots:
                if s.why.startswith(fmt.IMPOSSIBLE):
                    warnings.warn(
                        RecoveryWarning(
                            f"record slot {s.number}: {s.why}: damaged, passed over; opened "
                            f"generation {c.gen}"
                        ),
                        stacklevel=4,
                    )
        break
    else:
        assert failure is not None
        raise failure
    if c.writable:
        for s in passed:
            # before anything else is written: were a later commit to make those pages match
            # again and be cut short itself, the record would return, naming blocks of that
            # commit's state
            off = s.page * c.ps
            c.mm[off : off + geo.block] = bytes(geo.block)
        if passed and c.sync:
            sync.msync(c.mm, 0, min(len(c.mm), (max(c.record_pages) + 1) * c.ps))


def load_state(c: State, slot: fmt.RecordSlot) -> None:
    """Validate the state ``slot`` names (docs/FORMAT.md) and make it the state in memory."""
    rec = slot.header
    assert rec is not None
    geo = c.geo
    n = rec.page_count
    map_file(c, n)
    advise(c.mm, True)  # open_file gives the default back
    nb = bitmap_bytes(c, n)
    used, internal, pend = bytearray(nb), bytearray(nb), bytearray(nb)
    held: dict[int, int] = {}
    reader = Reader(c.mm, geo, n, rec.checkpoint, crc32c)
    refs: list[int] = sorted(c.reserved)
    b = geo.leaf_bytes
    bitmap, directory = Tree(), Tree()
    leaves = geo.bitmap_leaves(n)
    for level, index, ptr, raw in reader.walk(
        BITMAP, (rec.bitmap_root, rec.bitmap_crc), rec.bitmap_height
    ):
        refs.append(ptr[0])
        if level:
            bitmap.nodes[(level, index)] = ptr
            continue
        if index >= leaves:
            raise CorruptMetadata(f"bitmap leaf {index} lies beyond the page count")
        bitmap.leaves[index] = ptr
        u, d, p = (int.from_bytes(raw[32 + i * b : 32 + (i + 1) * b], "little") for i in range(3))
        if d & ~u or p & u or not (u | p):
            raise CorruptMetadata(f"bitmap leaf {index}: its bits contradict each other")
        if (u | p) >> max(0, n - index * geo.leaf_pages):
            raise CorruptMetadata(f"bitmap leaf {index}: bits set beyond the page count")
        span = slice(index * b, (index + 1) * b)
        used[span] = u.to_bytes(b, "little")
        internal[span] = (u & ~d).to_bytes(b, "little")
        pend[span] = p.to_bytes(b, "little")
        gen = fmt.BLOCK_HEADER.unpack_from(raw, 0)[2]
        base = index * geo.leaf_pages
        while p:
            low = p & -p
            held[base + low.bit_length() - 1] = gen
            p ^= low
    f = geo.fanout
    count = rec.slot_count
    slot_page = [0] * count
    slot_crc = [0] * count
    if rec.dir_root:
        for level, index, ptr, raw in reader.walk(
            DIRECTORY, (rec.dir_root, rec.dir_crc), rec.dir_height
        ):
            refs.append(ptr[0])
            if level:
                directory.nodes[(level, index)] = ptr
                continue
            directory.leaves[index] = ptr
            empty = True
            for i in range(f):
                page, crc = fmt.ENTRY.unpack_from(raw, 32 + 16 * i)
                if not page:
                    if crc:
                        raise CorruptProtectedDirectory(f"directory leaf {index}: a bad entry")
                    continue
                empty = False
                s = index * f + i
                if s >= count:
                    raise CorruptProtectedDirectory(f"protected page {s} is beyond slot_count")
                slot_page[s], slot_crc[s] = page, crc
            if empty:
                raise CorruptProtectedDirectory(f"directory leaf {index} is stored empty")
        directory.height = rec.dir_height
    elif rec.dir_height:
        raise CorruptProtectedDirectory("a directory height without a directory")
    bitmap.height = rec.bitmap_height
    log.check_generations(slot.log, rec.checkpoint, rec.generation)
    _apply_log(c, slot.log, n, used, internal, pend, held, slot_page, slot_crc, bitmap, directory)
    # the counts, the reserved pages, and every internal page referenced exactly once
    u_all = int.from_bytes(used, "little")
    i_all = int.from_bytes(internal, "little")
    if n - u_all.bit_count() != rec.free_count or (u_all & ~i_all).bit_count() != rec.data_count:
        raise CorruptMetadata("the record's page counts disagree with the bitmap")
    refs.extend(p for p in slot_page if p)
    if sum(1 for p in slot_page if p) != rec.slots_used:
        raise CorruptProtectedDirectory("the record's protected page count disagrees")
    if len(set(refs)) != len(refs):
        raise CorruptMetadata("an internal page is referenced twice")
    if i_all.bit_count() != len(refs) or not all(r < n and get_bit(internal, r) for r in refs):
        raise CorruptMetadata("the internal pages and the references to them disagree")
    # adopt
    c.gen, c.rec, c.checkpoint = rec.generation, slot.number, rec.checkpoint
    counts = Counts()
    counts.n, counts.free, counts.data = n, rec.free_count, rec.data_count
    counts.slot_count, counts.slots_used = count, rec.slots_used
    c.counts, c.committed = counts, counts.copy()
    c.taken = bytearray((u_all | int.from_bytes(pend, "little")).to_bytes(nb, "little"))
    c.internal, c.pending, c.held = internal, pend, held
    c.written = bytearray(nb)
    c.fifo = deque(sorted((g, p) for p, g in held.items()))
    c.born = set()
    c.hint = 0
    c.slot_page = array("Q", slot_page)
    c.slot_crc = array("I", slot_crc)
    c.slot_bits = bytearray((count + 7) // 8)
    for s, p in enumerate(slot_page):
        if p:
            c.slot_bits[s >> 3] |= 1 << (s & 7)
    c.verified = bytearray(len(c.slot_bits))
    c.slot_hint = 0
    c.bitmap, c.directory = bitmap, directory
    c.log = bytearray(slot.log)
    c.log_committed = len(slot.log)
    c.log_crc_committed = rec.log_crc
    c.words_start = -1
    space_known(c)


def _apply_log(
    c: State,
    data: bytes,
    n: int,
    used: bytearray,
    internal: bytearray,
    pend: bytearray,
    held: dict[int, int],
    slot_page: list[int],
    slot_crc: list[int],
    bitmap: Tree,
    directory: Tree,
) -> None:
    """Apply a record's log to the state the trees gave, checking every word."""
    gen = 0
    lp, f = c.geo.leaf_pages, c.geo.fanout
    for kind, a, b, crc in log.entries(data):
        if kind == fmt.GEN:
            gen = a
            continue
        if kind == fmt.SLOT:
            if a >= len(slot_page):
                raise CorruptProtectedDirectory(f"the log names protected page {a}")
            if b and not (b < n and get_bit(used, b) and get_bit(internal, b)):
                raise CorruptProtectedDirectory(f"protected page {a} names page {b}")
            slot_page[a], slot_crc[a] = b, crc
            directory.dirty.add(a // f)
            continue
        if a + b > n:
            raise CorruptMetadata(f"the log names pages {a}..{a + b} beyond the file")
        for page in range(a, a + b):
            mask = 1 << (page & 7)
            byte = page >> 3
            is_used = used[byte] & mask
            is_internal = internal[byte] & mask
            if kind in (fmt.DATA, fmt.INTERNAL):
                if is_used:
                    raise CorruptMetadata(f"the log allocates page {page}, which is in use")
                used[byte] |= mask
                if kind == fmt.INTERNAL:
                    internal[byte] |= mask
                if held.pop(page, None) is not None:
                    pend[byte] &= ~mask
            else:
                if not is_used or bool(is_internal) != (kind == fmt.FREE_INTERNAL):
                    raise CorruptMetadata(f"the log frees page {page}, which is not so in use")
                used[byte] &= ~mask
                internal[byte] &= ~mask
                held[page] = gen
                pend[byte] |= mask
            bitmap.dirty.add(page // lp)


def upgrade(c: State, v1: V1State, file_id: bytes) -> None:
    """Turn a format-1 file into format 2 in one commit (docs/FORMAT.md, "Version 1 files"):
    the format-2 trees and two record pages go to pages free in the format-1 state, the first
    record is made durable, and only then does the upgrade pointer land in page 0."""
    ps, n = v1.page_size, v1.page_count
    c.ps, c.geo = ps, fmt.Geometry(ps)
    geo = c.geo
    map_file(c, n)
    nb = bitmap_bytes(c, n)
    c.taken = bytearray(bytes(v1.used).ljust(nb, b"\0"))
    c.internal, c.pending, c.written = bytearray(nb), bytearray(nb), bytearray(nb)
    c.gen = c.checkpoint = v1.generation
    protected = [v1.protected[s] for s in sorted(v1.protected)]
    keep = {0, 1, 2, *v1.data_pages, *protected}
    for page in (0, 1, 2, *protected):
        c.internal[page >> 3] |= 1 << (page & 7)
    held: dict[int, int] = {}
    used_all = int.from_bytes(v1.used, "little")
    while used_all:  # format-1 pages format 2 has no use for: free once the upgrade commits
        low = used_all & -used_all
        page = low.bit_length() - 1
        used_all ^= low
        if page not in keep:
            held[page] = c.gen + 1
            c.pending[page >> 3] |= 1 << (page & 7)
    c.held = held
    c.fifo = deque(sorted((g, p) for p, g in held.items()))
    counts = Counts()
    counts.n, counts.free, counts.data = n, n - len(keep), len(v1.data_pages)
    counts.slot_count, counts.slots_used = v1.slot_count, len(v1.protected)
    c.counts, c.committed = counts, counts.copy()
    c.slot_page = array("Q", [0] * counts.slot_count)
    c.slot_crc = array("I", [0] * counts.slot_count)
    c.slot_bits = bytearray((counts.slot_count + 7) // 8)
    for slot, page in v1.protected.items():
        c.slot_page[slot] = page
        c.slot_crc[slot] = crc32c(c.mm[page * ps : (page + 1) * ps])
        c.slot_bits[slot >> 3] |= 1 << (slot & 7)
    c.verified = bytearray(len(c.slot_bits))
    c.bitmap, c.directory = Tree(), Tree()
    c.bitmap.dirty.update(range(geo.bitmap_leaves(n)))
    c.directory.dirty.update(range(geo.dir_leaves(counts.slot_count)))
    c.log, c.log_committed, c.log_crc_committed = bytearray(), 0, 0
    from . import alloc as _alloc
    from . import commit as _commit
    from . import directory as _directory

    space_known(c)
    records = (_alloc.take_lowest(c, True), _alloc.take_lowest(c, True))
    for page in records:
        c.mm[page * ps : (page + 1) * ps] = bytes(ps)
    _directory.stage(c, records[1])
    c.record_pages = records
    c.reserved = frozenset((0, 1, 2, *records))
    c.file_id = file_id
    c.rec = 1  # so that the commit writes record slot 0
    c.force_checkpoint = c.forced = True
    _commit.commit(c)
    try:
        pointer = fmt.UPGRADE.pack(fmt.UPGRADE_MAGIC, records[0], records[1], file_id)
        raw = bytearray(fmt.UPGRADE_SIZE)
        raw[: len(pointer)] = pointer
        struct.pack_into(
            "<I", raw, fmt.UPGRADE_CRC_OFFSET, crc32c(bytes(raw[: fmt.UPGRADE_CRC_OFFSET]))
        )
        sector = v1_pointer_sector(ps, v1.record_sector)
        c.mm[sector : sector + fmt.UPGRADE_SIZE] = raw
        _commit.barrier(c, "barrier2", [(0, fmt.UPGRADE_SIZE)])
    except BaseException:
        c.poisoned = True
        raise


def v1_pointer_sector(page_size: int, in_force: int) -> int:
    """Where the upgrade pointer goes: the format-1 record sector not in force (with 1 KiB
    pages, the only one)."""
    if page_size < 2048:
        return fmt.UPGRADE_SECTORS[0]
    return fmt.UPGRADE_SECTORS[1] if in_force == fmt.UPGRADE_SECTORS[0] else fmt.UPGRADE_SECTORS[0]
