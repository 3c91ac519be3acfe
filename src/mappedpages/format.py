"""Constants and arithmetic of the on-disk format (docs/FORMAT.md explains every byte).

The pure-Python core, the command line and the file creator use this module; the C core
mirrors the same numbers in ``csrc/format.h`` and a test compares the two.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import NamedTuple, Protocol

FORMAT_VERSION = 1
MAGIC = b"MAPPEDPG"
RECORD_MAGIC = b"MPSL"
META_MAGIC = b"MPMD"
GROUP_MAGIC = b"MPBG"
DIR_INDEX_MAGIC = b"MPDI"
DIR_BLOCK_MAGIC = b"MPDB"

MIN_PAGE_SIZE = 1024
MAX_PAGE_SIZE = 1 << 28
MAX_BLOCK = 4096
INITIAL_PAGES = 16
RESERVED_PAGES = 3  # superblock, metadata A, metadata B
GROW_MIN_STEP = 16
GROW_CAP_BYTES = 1 << 30

# superblock, sector 0
IDENTITY = struct.Struct("<8sII44x")  # magic, version, page size; crc at 60
IDENTITY_CRC_OFFSET = 60
# commit records: one sector each after the identity's (record i at RECORD_OFFSET + i *
# RECORD_SIZE); a commit writes the one the last commit did not
RECORD_OFFSET = 512
RECORD_SIZE = 512
RECORD = struct.Struct("<4sIQIIQ")  # magic, active, generation, meta_crc, log_len, meta_gen
# a one-barrier commit: count and flags, then up to RECORD_CHECKS pages it wrote (besides the
# metadata), each with the CRC32C of its P bytes
RECORD_CHECK_HEAD = struct.Struct("<II")
RECORD_CHECK_OFFSET = 32
RECORD_CHECK = struct.Struct("<QI")
RECORD_CHECKS = 6
RECORD_ONE_BARRIER = 1  # the flag
ONE_BARRIER_MAX_PAGE = 65536
RECORD_LOG_OFFSET = 112
RECORD_LOG_MAX = 396
RECORD_CRC_OFFSET = 508  # CRC32C of the record's bytes [0, 508)
# a log entry: a protected page's slot whose current copy changed since its directory block
# was written, with the new current flag in bit 31
LOG_ENTRY = struct.Struct("<I")
LOG_CURRENT_B = 1 << 31

# every block begins with this header: magic, crc of [8, M), generation, location, reserved
BLOCK_HEADER = struct.Struct("<4sIQQQ")
BLOCK_HEADER_SIZE = 32
# metadata fields after the block header
META_FIELDS = struct.Struct("<QQQQ")  # page_count, free_count, dir_a, dir_b
META_FIELDS_OFFSET = 32
META_BITMAP_OFFSET = 128
GROUP_BITMAP_OFFSET = 32
# protected-page directory: an index block (two copies, named by the metadata) lists the
# directory blocks (two copies each); a directory block holds one entry per protected page
DIR_COUNT_OFFSET = 32  # index: number of directory blocks; block: its own number in the index
DIR_ENTRIES_OFFSET = 64
DIR_ENTRY = struct.Struct("<QQ")  # index: copy 0, copy 1; block: page a | current flag, page b
DIR_CURRENT_B = 1 << 63  # in an entry's first word: page b holds the committed content


def record_count(page_size: int) -> int:
    """Commit records in page 0: two from 2 KiB pages on, one in a 1 KiB page 0 (which then
    never carries a log: every commit rewrites the metadata, so a damaged record loses
    nothing)."""
    return 2 if page_size >= 2048 else 1


def dir_capacity(block: int) -> int:
    """Entries of 16 bytes in an index or directory block of ``block`` bytes."""
    return (block - DIR_ENTRIES_OFFSET) // DIR_ENTRY.size


def popcount(value: int) -> int:
    """Number of set bits (``int.bit_count`` where Python has it, 3.10+)."""
    return value.bit_count() if _HAS_BIT_COUNT else bin(value).count("1")


_HAS_BIT_COUNT = hasattr(int, "bit_count")


def valid_page_size(page_size: object) -> bool:
    """True for a power of two in [MIN_PAGE_SIZE, MAX_PAGE_SIZE]."""
    return (
        type(page_size) is int
        and MIN_PAGE_SIZE <= page_size <= MAX_PAGE_SIZE
        and page_size & (page_size - 1) == 0
    )


class Geometry:
    """Where groups and their bitmap copies lie for one page size."""

    __slots__ = ("block", "c", "c0", "page_size")

    def __init__(self, page_size: int) -> None:
        self.page_size = page_size
        self.block = min(page_size, MAX_BLOCK)
        self.c0 = (self.block - META_BITMAP_OFFSET) * 8
        self.c = (self.block - GROUP_BITMAP_OFFSET) * 8

    def group_of(self, page: int) -> int:
        """The group whose bitmap holds ``page``'s bit (0 = the metadata pages)."""
        return 0 if page < self.c0 else 1 + (page - self.c0) // self.c

    def group_start(self, k: int) -> int:
        """First page described by group ``k`` (for k >= 1 also its copy-0 page)."""
        return 0 if k == 0 else self.c0 + (k - 1) * self.c

    def group_count(self, page_count: int) -> int:
        """Number of groups, group 0 included, that exist for ``page_count`` pages."""
        if page_count <= self.c0:
            return 1
        return 1 + -(-(page_count - self.c0) // self.c)

    def is_internal(self, page: int) -> bool:
        """True for pages 0-2 and the two bitmap copies of every group."""
        if page < RESERVED_PAGES:
            return True
        return page >= self.c0 and (page - self.c0) % self.c < 2

    def internal_between(self, lo: int, hi: int) -> int:
        """Number of group copy pages in [lo, hi), for lo >= RESERVED_PAGES."""
        if hi <= self.c0:
            return 0

        def upto(x: int) -> int:  # copy pages in [c0, x)
            if x <= self.c0:
                return 0
            full, rest = divmod(x - self.c0, self.c)
            return 2 * full + min(rest, 2)

        return upto(hi) - upto(max(lo, self.c0))

    def fix_end(self, count: int) -> int:
        """Move a page count that would cut a group's two copy pages to just after them."""
        if count <= self.c0:
            return count
        start = self.group_start(self.group_count(count) - 1)
        return start + 2 if count < start + 2 else count

    def grow_target(self, page_count: int, free_needed: int) -> int:
        """The page count after growing so that ``free_needed`` more free pages exist."""
        cap = max(GROW_MIN_STEP, GROW_CAP_BYTES // self.page_size)
        target = page_count
        while True:
            target += min(max(target, GROW_MIN_STEP), cap)
            target = self.fix_end(target)
            added = target - page_count - self.internal_between(page_count, target)
            if added >= free_needed:
                return target


def initial_image(page_size: int, crc32c: Callable[[bytes], int]) -> bytes:
    """The bytes of a freshly created file (docs/FORMAT.md, "A new file")."""
    geo = Geometry(page_size)
    image = bytearray(INITIAL_PAGES * page_size)
    ident = IDENTITY.pack(MAGIC, FORMAT_VERSION, page_size)
    image[0:IDENTITY_CRC_OFFSET] = ident
    struct.pack_into("<I", image, IDENTITY_CRC_OFFSET, crc32c(ident))

    meta = bytearray(geo.block)
    META_FIELDS.pack_into(
        meta, META_FIELDS_OFFSET, INITIAL_PAGES, INITIAL_PAGES - RESERVED_PAGES, 0, 0
    )
    meta[META_BITMAP_OFFSET] = 0b111  # pages 0, 1, 2
    BLOCK_HEADER.pack_into(meta, 0, META_MAGIC, 0, 1, 1, 0)
    meta_crc = crc32c(bytes(meta[8:]))
    struct.pack_into("<I", meta, 4, meta_crc)
    image[page_size : page_size + geo.block] = meta

    RECORD.pack_into(image, RECORD_OFFSET, RECORD_MAGIC, 0, 1, meta_crc, 0, 1)
    record = bytes(image[RECORD_OFFSET : RECORD_OFFSET + RECORD_CRC_OFFSET])
    struct.pack_into("<I", image, RECORD_OFFSET + RECORD_CRC_OFFSET, crc32c(record))
    return bytes(image)


class Crc32c(Protocol):
    """``crc32c(data, crc)``: the checksum of ``data``, continuing ``crc``."""

    def __call__(self, data: bytes, crc: int = 0, /) -> int: ...


class Record(NamedTuple):
    """A commit record: the metadata copy it names, and its log."""

    active: int
    generation: int
    meta_crc: int
    meta_gen: int
    log: bytes
    one_barrier: bool
    checks: tuple[tuple[int, int], ...]  # one barrier: (page, CRC32C) of each page it wrote


def read_record(page0: bytes, i: int, crc32c: Callable[[bytes], int]) -> Record | None:
    """Commit record ``i`` of page 0, or None when it is not well formed (whether its metadata
    copy matches is for the caller to check)."""
    off = RECORD_OFFSET + i * RECORD_SIZE
    raw = page0[off : off + RECORD_SIZE]
    if len(raw) < RECORD_SIZE:
        return None
    magic, active, gen, meta_crc, log_len, meta_gen = RECORD.unpack_from(raw, 0)
    (rcrc,) = struct.unpack_from("<I", raw, RECORD_CRC_OFFSET)
    count, flags = RECORD_CHECK_HEAD.unpack_from(raw, RECORD_CHECK_OFFSET)
    if (
        magic != RECORD_MAGIC
        or rcrc != crc32c(bytes(raw[:RECORD_CRC_OFFSET]))
        or active > 1
        or log_len > RECORD_LOG_MAX
        or log_len % 4
        or not 0 < meta_gen <= gen
        or flags > RECORD_ONE_BARRIER
        or count > (RECORD_CHECKS if flags else 0)
        or (flags and page_size_of(page0) > ONE_BARRIER_MAX_PAGE)
    ):
        return None
    log = bytes(raw[RECORD_LOG_OFFSET : RECORD_LOG_OFFSET + log_len])
    base = RECORD_CHECK_OFFSET + RECORD_CHECK_HEAD.size
    size = RECORD_CHECK.size
    checks = tuple(RECORD_CHECK.unpack_from(raw, base + i * size) for i in range(count))
    return Record(active, gen, meta_crc, meta_gen, log, bool(flags), checks)


def page_size_of(page0: bytes) -> int:
    """The page size the identity sector states (validated by the caller)."""
    return int(IDENTITY.unpack_from(page0, 0)[2])


def check_matches(
    rec: Record,
    page_count: int,
    file_size: int,
    page_size: int,
    read: Callable[[int, int], bytes],
    crc32c: Crc32c,
) -> bool:
    """Whether the pages a one-barrier commit's record lists (none: true) hold what it wrote."""
    for page, crc in rec.checks:
        if not RESERVED_PAGES <= page < min(page_count, file_size // page_size):
            return False
        if crc32c(read(page * page_size, page_size)) != crc:
            return False
    return True


def select_record(
    page0: bytes,
    page_size: int,
    metas: list[bytes],
    meta_gens: list[int],
    file_size: int,
    read: Callable[[int, int], bytes],
    crc32c: Crc32c,
) -> tuple[int, Record | None, list[int]]:
    """The commit record in force (docs/FORMAT.md, "Which copy is current", rule 1).

    Returns its index (-1: none, rule 2 applies), the record, and the indices of the newer
    well-formed records passed over: their metadata copy or listed pages do not match.
    """
    candidates = []
    for i in range(record_count(page_size)):
        rec = read_record(page0, i, crc32c)
        if rec is not None:
            candidates.append((rec.generation, i, rec))
    passed: list[int] = []
    for _gen, i, rec in sorted(candidates, reverse=True):
        meta = metas[rec.active]
        (count,) = struct.unpack_from("<Q", meta, META_FIELDS_OFFSET)
        if (
            meta_gens[rec.active] == rec.meta_gen
            and struct.unpack_from("<I", meta, 4)[0] == rec.meta_crc
            and check_matches(rec, count, file_size, page_size, read, crc32c)
        ):
            return i, rec, passed
        passed.append(i)
    return -1, None, passed
