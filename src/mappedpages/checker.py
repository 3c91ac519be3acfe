"""An independent reader of the file format that verifies every checksum and invariant.

It shares no code with the cores beyond format.py and a CRC32C function, so it doubles as an
oracle for the tests: whatever a core writes must pass it. It reads the file with ``pread`` in
whole blocks and never maps it, so it can look at a file another process is writing.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from . import _snapshot
from .format import (
    BLOCK_HEADER,
    DIR_BLOCK_MAGIC,
    DIR_COUNT_OFFSET,
    DIR_CURRENT_B,
    DIR_ENTRIES_OFFSET,
    DIR_ENTRY,
    DIR_INDEX_MAGIC,
    FORMAT_VERSION,
    GROUP_BITMAP_OFFSET,
    GROUP_MAGIC,
    IDENTITY,
    IDENTITY_CRC_OFFSET,
    LOG_CURRENT_B,
    LOG_ENTRY,
    MAGIC,
    META_BITMAP_OFFSET,
    META_FIELDS,
    META_FIELDS_OFFSET,
    META_MAGIC,
    RECORD_SIZE,
    Crc32c,
    Geometry,
    dir_capacity,
    popcount,
    read_record,
    record_count,
    select_record,
    valid_page_size,
)

Crc = Crc32c


@dataclass
class Block:
    """One decoded block copy."""

    page: int
    valid: bool
    generation: int = 0
    why: str = ""


@dataclass
class Report:
    """What ``check_file`` found. ``ok`` is true only when ``problems`` is empty."""

    path: str
    file_size: int = 0
    page_size: int = 0
    format_version: int = 0
    page_count: int = 0
    free_count: int = 0
    allocated_data_pages: int = 0
    generation: int = 0
    active: str = ""
    record: int = -1  # the commit record in force, -1 for none
    log_entries: int = 0
    metadata: list[Block] = field(default_factory=list)
    groups: int = 0
    leftover_copies: int = 0
    protected_pages: int = 0
    directory_pages: int = 0  # index, blocks and both copies of every protected page
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # recoverable states, not problems

    @property
    def ok(self) -> bool:
        return not self.problems


class _Fatal(Exception):
    pass


def _decode_block(data: bytes, page: int, magic: bytes, crc32c: Crc) -> Block:
    m, crc, gen, location, reserved = BLOCK_HEADER.unpack_from(data, 0)
    if m != magic:
        return Block(page, False, why="bad magic" if any(data[:32]) else "empty")
    if crc != crc32c(data[8:]):
        return Block(page, False, gen, "checksum mismatch")
    if location != page:
        return Block(page, False, gen, f"written for page {location}")
    if gen == 0 or reserved != 0:
        return Block(page, False, gen, "bad header fields")
    return Block(page, True, gen)


def check_file(
    path: str, crc32c: Crc, progress: Callable[[int, int], None] | None = None
) -> Report:
    """Read ``path`` and verify it; never raises for file content (OSError for I/O).

    A writer may be committing meanwhile: a check that finds problems while a commit landed is
    done again (as a reader's load is, see _snapshot.py).
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        wait = _snapshot.FIRST_WAIT
        for _ in range(_snapshot.ATTEMPTS):
            before = _snapshot.mark(fd)
            report = Report(path)
            try:
                _check(fd, report, crc32c, progress)
            except _Fatal as exc:
                report.problems.append(str(exc))
            if report.ok or _snapshot.mark(fd) == before:
                return report
            wait = _snapshot.pause(wait)
        report.problems.append(
            f"a writer committed during each of {_snapshot.ATTEMPTS} checks: the problems "
            "above may come from reading a file that was changing"
        )
        return report
    finally:
        os.close(fd)


def _read(fd: int, offset: int, size: int) -> bytes:
    data = os.pread(fd, size, offset)
    if len(data) != size:
        raise _Fatal(f"file ends inside the range {offset}..{offset + size}")
    return data


def _check(fd: int, r: Report, crc32c: Crc, progress: Callable[[int, int], None] | None) -> None:
    r.file_size = os.fstat(fd).st_size
    if r.file_size < 1024:
        raise _Fatal("not a mappedpages file: shorter than a superblock")
    head = _read(fd, 0, 1024)
    magic, version, page_size = IDENTITY.unpack_from(head, 0)
    if magic != MAGIC:
        raise _Fatal("not a mappedpages file: bad magic")
    (ident_crc,) = struct.unpack_from("<I", head, IDENTITY_CRC_OFFSET)
    if ident_crc != crc32c(head[:IDENTITY_CRC_OFFSET]):
        raise _Fatal("superblock identity checksum mismatch")
    r.format_version = version
    if version != FORMAT_VERSION:
        raise _Fatal(f"format version {version} is not supported (expected {FORMAT_VERSION})")
    if not valid_page_size(page_size):
        raise _Fatal(f"superblock page size {page_size} is invalid")
    r.page_size = page_size
    if r.file_size < 3 * page_size:
        raise _Fatal("file is shorter than its three reserved pages")
    geo = Geometry(page_size)

    if record_count(page_size) > 1:
        head += _read(fd, 1024, RECORD_SIZE)
    metas = [_read(fd, p * page_size, geo.block) for p in (1, 2)]
    blocks = [_decode_block(m, p, META_MAGIC, crc32c) for m, p in zip(metas, (1, 2), strict=True)]
    r.metadata = blocks
    records = [(i, read_record(head, i, crc32c)) for i in range(record_count(page_size))]
    valid = sorted(
        ((rec.generation, i, rec) for i, rec in records if rec is not None), reverse=True
    )
    gens = [b.generation if b.valid else 0 for b in blocks]
    index, rec, passed = select_record(
        head, page_size, metas, gens, r.file_size, lambda off, n: _read(fd, off, n), crc32c
    )
    chosen, log = -1, b""
    if rec is not None:
        chosen, r.record, log, gen = rec.active, index, rec.log, rec.generation
    by_index = dict(records)
    for i in passed:
        newer = by_index[i]
        if newer is not None and newer.one_barrier:
            # its pages or metadata did not all land: the power cut came before its barrier
            r.notes.append(f"commit record {i} is a commit cut short; the one before it is used")
        else:  # two barriers: its metadata was durable before it was written
            r.problems.append(f"commit record {i} names a metadata copy that does not match it")
    if chosen < 0:
        if not valid and len(records) == 1:
            # a power cut during the record write: the metadata is rewritten by every commit
            # when there is one record, so the format falls back by design
            r.notes.append("commit record torn; the newest valid metadata copy is used")
        elif not valid:
            r.problems.append("no valid commit record")
        valid_meta = [i for i in (0, 1) if blocks[i].valid]
        if not valid_meta:
            raise _Fatal("neither metadata copy is valid")
        chosen = max(valid_meta, key=lambda i: blocks[i].generation)
        gen = blocks[chosen].generation
    r.active = "AB"[chosen]
    r.generation = gen
    meta = metas[chosen]
    page_count, free_count, dir_a, dir_b = META_FIELDS.unpack_from(meta, META_FIELDS_OFFSET)
    r.page_count, r.free_count = page_count, free_count
    if page_count < 3:
        raise _Fatal(f"page count {page_count} is below the three reserved pages")
    if page_count * page_size > r.file_size:
        raise _Fatal(
            f"metadata covers {page_count} pages but the file holds {r.file_size // page_size}"
        )
    if geo.fix_end(page_count) != page_count:
        r.problems.append(f"page count {page_count} cuts a bitmap group's copy pages")

    # Assemble the committed bitmap, group by group, counting as we go.
    used = 0
    in_use: dict[int, int] = {}  # group -> its committed bits below the page count
    groups = geo.group_count(page_count)
    r.groups = groups
    for k in range(groups):
        if progress is not None and k % 1024 == 0:
            progress(k, groups)
        if k == 0:
            bits = meta[META_BITMAP_OFFSET:]
            first, span = 0, geo.c0
        else:
            first, span = geo.group_start(k), geo.c
            copies = [_read(fd, (first + i) * page_size, geo.block) for i in (0, 1)]
            decoded = [
                _decode_block(c, first + i, GROUP_MAGIC, crc32c) for i, c in enumerate(copies)
            ]
            fit = [i for i in (0, 1) if decoded[i].valid and decoded[i].generation <= gen]
            r.leftover_copies += sum(1 for d in decoded if d.valid and d.generation > gen)
            if not fit:
                r.problems.append(
                    f"bitmap group {k}: no valid copy ({decoded[0].why}, {decoded[1].why})"
                )
                continue
            best = max(fit, key=lambda i: decoded[i].generation)
            bits = copies[best][GROUP_BITMAP_OFFSET:]
        n = min(span, page_count - first)
        value = int.from_bytes(bits, "little")
        inside = value & ((1 << n) - 1)
        if value >> n:
            r.problems.append(f"bitmap group {k}: bits set beyond the page count")
        used += popcount(inside)
        in_use[k] = inside
        if k == 0:
            if inside & 0b111 != 0b111:
                r.problems.append("reserved pages 0-2 are not marked in use")
        elif inside & 0b11 != 0b11:
            r.problems.append(f"bitmap group {k}: its own copy pages are not marked in use")
    if progress is not None:
        progress(groups, groups)

    def allocated(page: int) -> bool:
        k = geo.group_of(page)
        return k in in_use and bool(in_use[k] >> (page - geo.group_start(k)) & 1)

    _check_directory(fd, r, geo, gen, (dir_a, dir_b), allocated, crc32c, log)
    internal = 3 + 2 * (groups - 1) + r.directory_pages
    r.allocated_data_pages = used - internal
    if page_count - used != free_count:
        r.problems.append(
            f"free count {free_count} disagrees with the bitmap ({page_count - used} free)"
        )


def _check_directory(
    fd: int,
    r: Report,
    geo: Geometry,
    gen: int,
    index_pages: tuple[int, int],
    allocated: Callable[[int], bool],
    crc32c: Crc,
    log: bytes,
) -> None:
    """Verify the protected-page directory: index, blocks, entries and the pages they name,
    and the commit record's log of switched slots."""
    r.log_entries = len(log) // LOG_ENTRY.size
    if index_pages == (0, 0):
        if log:
            r.problems.append("the commit record has a log but there is no directory")
        return
    seen: set[int] = set()

    def claim(page: int, what: str) -> bool:
        if not 3 <= page < r.page_count or geo.is_internal(page):
            r.problems.append(f"{what}: page {page} is outside the data pages")
        elif page in seen:
            r.problems.append(f"{what}: page {page} is used twice")
        elif not allocated(page):
            r.problems.append(f"{what}: page {page} is not marked in use")
        else:
            seen.add(page)
            return True
        return False

    def current(pages: tuple[int, int], magic: bytes, what: str) -> bytes | None:
        copies = [_read(fd, p * geo.page_size, geo.block) for p in pages]
        decoded = [_decode_block(c, p, magic, crc32c) for c, p in zip(copies, pages, strict=True)]
        fit = [i for i in (0, 1) if decoded[i].valid and decoded[i].generation <= gen]
        r.leftover_copies += sum(1 for d in decoded if d.valid and d.generation > gen)
        if not fit:
            r.problems.append(f"{what}: no valid copy ({decoded[0].why}, {decoded[1].why})")
            return None
        return copies[max(fit, key=lambda i: decoded[i].generation)]

    if not (claim(index_pages[0], "directory index") and claim(index_pages[1], "directory index")):
        return
    index = current(index_pages, DIR_INDEX_MAGIC, "directory index")
    if index is None:
        return
    capacity = dir_capacity(geo.block)
    used_slots: set[int] = set()
    (count,) = struct.unpack_from("<Q", index, DIR_COUNT_OFFSET)
    if count > capacity:
        r.problems.append(f"directory index lists {count} blocks (at most {capacity})")
        return
    for b in range(count):
        pages = DIR_ENTRY.unpack_from(index, DIR_ENTRIES_OFFSET + 16 * b)
        what = f"directory block {b}"
        if not (claim(pages[0], what) and claim(pages[1], what)):
            continue
        block = current(pages, DIR_BLOCK_MAGIC, f"directory block {b}")
        if block is None:
            continue
        if struct.unpack_from("<Q", block, DIR_COUNT_OFFSET)[0] != b:
            r.problems.append(f"directory block {b} carries another block's number")
        for i in range(capacity):
            w0, pb = DIR_ENTRY.unpack_from(block, DIR_ENTRIES_OFFSET + 16 * i)
            pa = w0 & ~DIR_CURRENT_B
            if pa == 0:
                if w0 or pb:
                    r.problems.append(f"directory block {b}: entry {i} is neither used nor free")
                continue
            r.protected_pages += 1
            used_slots.add(b * capacity + i)
            claim(pa, f"protected page {b * capacity + i}")
            claim(pb, f"protected page {b * capacity + i}")
    r.directory_pages = len(seen)
    logged: set[int] = set()
    for (word,) in LOG_ENTRY.iter_unpack(log):
        slot = word & ~LOG_CURRENT_B
        if slot not in used_slots or slot in logged:
            r.problems.append(f"the commit record's log names slot {slot}")
        logged.add(slot)
