"""The on-disk format's numbers, arithmetic and record layouts (docs/FORMAT.md explains every
byte).

Each layout is a codec with named fields: a ``struct.Struct`` and a ``NamedTuple`` whose field
order is the layout's, so that nothing outside this module computes an offset by hand. The C
core mirrors the same numbers and layouts in ``csrc/format.h``; a test compares every
``MP_*`` constant there with this module.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from typing import NamedTuple, Protocol

from .errors import CorruptMetadata, CorruptSuperblock, InvalidPageSize

FORMAT_VERSION = 2
MAGIC = b"MAPPEDPG"

MIN_PAGE_SIZE = 1024
MAX_PAGE_SIZE = 1 << 28
MAX_BLOCK = 4096
INITIAL_PAGES = 16
RESERVED_PAGES = 3  # identity and the two commit record slots
MIN_PAGE_COUNT = 4  # the reserved pages and one more: the smallest state
GROW_MIN_STEP = 16
GROW_CAP_BYTES = 1 << 30
ONE_BARRIER_MAX_PAGE = 65536
LISTED_MAX = 8  # entries a one-barrier record lists: runs of pages
LISTED_PAGES = 256  # pages those runs hold at most, so that opening reads little
RUN_LIMIT = 1 << 32  # pages one listed run may hold
MAX_HEIGHT = 8
PAGE_LIMIT = 1 << 48  # page numbers (and slots) fit in 48 bits
GENERATION_LIMIT = 1 << 60  # generations fit in a log word's 60 bits
RUN_MAX = 4096  # pages in one log word

# -- page 0: identity -------------------------------------------------------------------------


class Identity(NamedTuple):
    magic: bytes
    version: int
    page_size: int
    record_0: int
    record_1: int
    file_id: bytes


IDENTITY = struct.Struct("<8sIIQQ16s12x")
IDENTITY_CRC_OFFSET = 60


def pack_identity(ident: Identity, crc32c: Callable[[bytes], int]) -> bytes:
    raw = IDENTITY.pack(*ident)
    return raw + struct.pack("<I", crc32c(raw))


def unpack_identity(head: bytes) -> tuple[Identity, int]:
    """The identity fields of page 0 and its stored CRC."""
    ident = Identity(*IDENTITY.unpack_from(head, 0))
    (crc,) = struct.unpack_from("<I", head, IDENTITY_CRC_OFFSET)
    return ident, crc


# -- commit records ------------------------------------------------------------------------

RECORD_MAGIC = b"MPCR"


class Record(NamedTuple):
    """A commit record's header (bytes [0, 128) of its slot)."""

    magic: bytes
    crc: int
    generation: int
    page_count: int
    free_count: int
    data_count: int
    slot_count: int
    slots_used: int
    checkpoint: int
    bitmap_root: int
    bitmap_crc: int
    bitmap_height: int
    dir_height: int
    flags: int
    listed: int
    dir_root: int
    dir_crc: int
    log_len: int
    log_crc: int


RECORD = struct.Struct("<4sIQQQQQQQQIBBBBQIII28x")
RECORD_CRC_FROM = 8  # record_crc covers [8, LISTED_OFFSET + 16 * listed)
LISTED_OFFSET = 128
LISTED = struct.Struct("<QII")  # a run of pages: its first, the CRC32C of its bytes, length - 1


class Listed(NamedTuple):
    """A listed entry: pages ``[page, page + run + 1)`` held bytes whose CRC32C is ``crc``."""

    page: int
    crc: int
    run: int  # pages in the run, less one


LOG_OFFSET = 256
FLAG_ONE_BARRIER = 1


def log_room(block: int) -> int:
    """Bytes of log a record of ``block`` bytes holds."""
    return block - LOG_OFFSET


# -- blocks --------------------------------------------------------------------------------

BLOCK_HEADER = struct.Struct("<4sIQQQ")  # magic, crc of [8, M), generation, location, key
BLOCK_HEADER_SIZE = 32
BITMAP_LEAF = b"MPBL"
BITMAP_NODE = b"MPBN"
DIR_LEAF = b"MPDL"
DIR_NODE = b"MPDN"
POINTER = struct.Struct("<QI4x")  # page, CRC32C; (0, 0) is null
ENTRY = POINTER  # a directory entry: content page, CRC32C of its P bytes
LEVEL_SHIFT = 56


class BlockHeader(NamedTuple):
    magic: bytes
    crc: int
    generation: int
    location: int
    key: int


def node_key(level: int, index: int) -> int:
    return level << LEVEL_SHIFT | index


# -- log words -----------------------------------------------------------------------------

WORD = struct.Struct("<Q")
KIND_SHIFT = 60
RUN_SHIFT = 48
PAGE_MASK = (1 << RUN_SHIFT) - 1
GEN = 1
DATA = 2
INTERNAL = 3
FREE_DATA = 4
FREE_INTERNAL = 5
SLOT = 6
RUN_KINDS = (DATA, INTERNAL, FREE_DATA, FREE_INTERNAL)


def run_word(kind: int, page: int, count: int) -> int:
    return kind << KIND_SHIFT | (count - 1) << RUN_SHIFT | page


def gen_word(generation: int) -> int:
    return GEN << KIND_SHIFT | generation


def slot_words(slot: int, page: int, crc: int) -> tuple[int, int, int]:
    return SLOT << KIND_SHIFT | slot, page, crc


def word_kind(word: int) -> int:
    return word >> KIND_SHIFT


def word_run(word: int) -> tuple[int, int]:
    """(first page, count) of a run word."""
    return word & PAGE_MASK, (word >> RUN_SHIFT & 0xFFF) + 1


# -- the reader table ------------------------------------------------------------------------

TABLE_SUFFIX = "-readers"
TABLE_MAGIC = b"MPREADRS"
TABLE_VERSION = 1
TABLE_HEADER_SIZE = 4096
TABLE_SLOT_SIZE = 64
TABLE_CAPACITY = 4096
TABLE_SIZE = TABLE_HEADER_SIZE + TABLE_SLOT_SIZE * TABLE_CAPACITY


class TableHeader(NamedTuple):
    magic: bytes
    version: int
    slot_size: int
    capacity: int
    hwm: int
    file_id: bytes


TABLE_HEADER = struct.Struct("<8sIIII16s")
TABLE_HWM_OFFSET = 20


class TableSlot(NamedTuple):
    generation: int
    pid: int
    start_time: int
    since: int


TABLE_SLOT = struct.Struct("<QQQQ32x")
TABLE_SLOT_SINCE_OFFSET = 24


def table_slot_offset(slot: int) -> int:
    return TABLE_HEADER_SIZE + TABLE_SLOT_SIZE * slot


# -- version 1 files: the upgrade pointer in a format-1 record sector -------------------------

V1_VERSION = 1
UPGRADE_MAGIC = b"MPV2"
UPGRADE = struct.Struct("<4s4xQQ16s")
UPGRADE_SECTORS = (512, 1024)  # format 1's record sectors in page 0
UPGRADE_SIZE = 512
UPGRADE_CRC_OFFSET = 508


class Upgrade(NamedTuple):
    magic: bytes
    record_0: int
    record_1: int
    file_id: bytes


# -- arithmetic ----------------------------------------------------------------------------


def popcount(value: int) -> int:
    return value.bit_count()


def valid_page_size(page_size: object) -> bool:
    """True for a power of two in [MIN_PAGE_SIZE, MAX_PAGE_SIZE]."""
    return (
        type(page_size) is int
        and MIN_PAGE_SIZE <= page_size <= MAX_PAGE_SIZE
        and page_size & (page_size - 1) == 0
    )


class Geometry:
    """Sizes of the structures for one page size (docs/FORMAT.md, "Terms")."""

    __slots__ = ("block", "fanout", "leaf_bytes", "leaf_pages", "page_size")

    def __init__(self, page_size: int) -> None:
        self.page_size = page_size
        self.block = min(page_size, MAX_BLOCK)
        self.fanout = (self.block - BLOCK_HEADER_SIZE) // POINTER.size
        self.leaf_bytes = (self.block - BLOCK_HEADER_SIZE) // 24 * 8
        self.leaf_pages = 8 * self.leaf_bytes

    def height_for(self, leaves: int) -> int:
        """The least height whose tree holds ``leaves`` leaves."""
        h, room = 0, 1
        while room < leaves:
            h, room = h + 1, room * self.fanout
        return h

    def bitmap_leaves(self, page_count: int) -> int:
        return -(-page_count // self.leaf_pages)

    def dir_leaves(self, slot_count: int) -> int:
        return -(-slot_count // self.fanout)

    def grow_target(self, page_count: int, needed: int) -> int:
        """The page count after growing so that ``needed`` more pages exist."""
        cap = max(GROW_MIN_STEP, GROW_CAP_BYTES // self.page_size)
        target = page_count
        while target - page_count < needed:
            target += min(max(target, GROW_MIN_STEP), cap)
        return target


def one_barrier_allowed(page_size: int) -> bool:
    return page_size <= ONE_BARRIER_MAX_PAGE


# -- a new file ----------------------------------------------------------------------------


def new_file_id() -> bytes:
    return os.urandom(16)


def pack_block(
    block: int, magic: bytes, generation: int, location: int, key: int, body: bytes, crc32c: Crc32c
) -> bytes:
    """A block of ``block`` bytes: the header (with its CRC) and ``body`` from byte 32."""
    raw = bytearray(block)
    raw[BLOCK_HEADER_SIZE : BLOCK_HEADER_SIZE + len(body)] = body
    BLOCK_HEADER.pack_into(raw, 0, magic, 0, generation, location, key)
    struct.pack_into("<I", raw, 4, crc32c(bytes(raw[8:])))
    return bytes(raw)


def pack_record(
    block: int,
    rec: Record,
    listed: bytes,
    log: bytes,
    crc32c: Crc32c,
    log_crc: int | None = None,
) -> bytes:
    """A whole record slot of ``block`` bytes; ``rec.crc`` is computed, and ``rec.log_crc``
    too unless the caller kept it as the log grew (``log_crc``)."""
    raw = bytearray(block)
    if log_crc is None:
        log_crc = crc32c(log)
    rec = rec._replace(magic=RECORD_MAGIC, log_len=len(log), log_crc=log_crc, crc=0)
    RECORD.pack_into(raw, 0, *rec)
    raw[LISTED_OFFSET : LISTED_OFFSET + len(listed)] = listed
    raw[LOG_OFFSET : LOG_OFFSET + len(log)] = log
    end = LISTED_OFFSET + len(listed)
    struct.pack_into("<I", raw, 4, crc32c(bytes(raw[RECORD_CRC_FROM:end])))
    return bytes(raw)


def initial_image(page_size: int, crc32c: Crc32c, file_id: bytes) -> bytes:
    """The bytes of a freshly created file (docs/FORMAT.md, "A new file")."""
    geo = Geometry(page_size)
    image = bytearray(INITIAL_PAGES * page_size)
    ident = Identity(MAGIC, FORMAT_VERSION, page_size, 1, 2, file_id)
    image[0:64] = pack_identity(ident, crc32c)
    leaf_page = RESERVED_PAGES
    body = bytearray(3 * geo.leaf_bytes)
    body[0] = 0b1111  # used: pages 0-3 (page 3 is this leaf)
    leaf = pack_block(geo.block, BITMAP_LEAF, 1, leaf_page, 0, bytes(body), crc32c)
    image[leaf_page * page_size : leaf_page * page_size + geo.block] = leaf
    (leaf_crc,) = struct.unpack_from("<I", leaf, 4)
    rec = Record(
        RECORD_MAGIC, 0, 1, INITIAL_PAGES, INITIAL_PAGES - 4, 0, 0, 0, 1,
        leaf_page, leaf_crc, 0, 0, 0, 0, 0, 0, 0, 0,
    )  # fmt: skip
    image[page_size : page_size + geo.block] = pack_record(geo.block, rec, b"", b"", crc32c)
    return bytes(image)


class Crc32c(Protocol):
    """``crc32c(data, crc)``: the checksum of ``data``, continuing ``crc``."""

    def __call__(self, data: bytes, crc: int = 0, /) -> int: ...


# -- which record is in force (shared by every reader of the format) --------------------------


# why a record whose checksums match is not well formed: no crash or random damage leaves one
IMPOSSIBLE = "checksums match, but "


class RecordSlot(NamedTuple):
    """A record slot as read: its header (None when not well formed), listed pages and log."""

    number: int  # 0 or 1
    page: int
    header: Record | None
    listed: tuple[tuple[int, int, int], ...]  # (page, crc, run) entries
    log: bytes
    why: str  # why it is not well formed ("" when it is; "empty" for an all-zero slot)
    raw: bytes = b""  # the block as read


def read_record_slot(
    raw: bytes, index: int, page: int, geo: Geometry, file_size: int, crc32c: Crc32c
) -> RecordSlot:
    """Decode and check one record slot by itself (whether its listed pages landed is
    ``landed``'s question)."""
    if len(raw) < geo.block:
        return RecordSlot(index, page, None, (), b"", "the file ends inside it")
    if not any(raw[: geo.block]):
        return RecordSlot(index, page, None, (), b"", "empty")
    rec = Record(*RECORD.unpack_from(raw, 0))
    why = ""
    if rec.magic != RECORD_MAGIC:
        why = "bad magic"
    elif not rec.listed <= LISTED_MAX or rec.log_len % 8 or rec.log_len > log_room(geo.block):
        why = "bad sizes"
    elif rec.crc != crc32c(bytes(raw[RECORD_CRC_FROM : LISTED_OFFSET + LISTED.size * rec.listed])):
        why = "checksum mismatch"
    elif rec.log_crc != crc32c(bytes(raw[LOG_OFFSET : LOG_OFFSET + rec.log_len])):
        why = "log checksum mismatch"
    elif rec.flags & ~FLAG_ONE_BARRIER or (rec.listed and not rec.flags):
        why = IMPOSSIBLE + "bad flags"
    elif rec.flags and not one_barrier_allowed(geo.page_size):
        why = IMPOSSIBLE + "one barrier with large pages"
    elif not 1 <= rec.checkpoint <= rec.generation or rec.generation >= GENERATION_LIMIT:
        why = IMPOSSIBLE + "bad generations"
    elif rec.page_count < MIN_PAGE_COUNT or rec.page_count > PAGE_LIMIT:
        why = IMPOSSIBLE + "bad page count"
    elif rec.bitmap_height > MAX_HEIGHT or rec.dir_height > MAX_HEIGHT:
        why = IMPOSSIBLE + "bad tree height"
    elif rec.slot_count > rec.page_count or rec.slots_used > rec.slot_count:
        why = IMPOSSIBLE + "bad slot counts"
    elif rec.free_count > rec.page_count or rec.data_count > rec.page_count - rec.free_count:
        why = IMPOSSIBLE + "bad page counts"
    elif rec.bitmap_root == 0 or (rec.dir_root == 0 and (rec.dir_crc or rec.dir_height)):
        why = IMPOSSIBLE + "bad roots"
    elif any(raw[100:128]):
        why = IMPOSSIBLE + "reserved bytes set"
    if why:
        return RecordSlot(index, page, None, (), b"", why, bytes(raw[: geo.block]))
    listed = tuple(
        LISTED.unpack_from(raw, LISTED_OFFSET + LISTED.size * i) for i in range(rec.listed)
    )
    log = bytes(raw[LOG_OFFSET : LOG_OFFSET + rec.log_len])
    return RecordSlot(index, page, rec, listed, log, "", bytes(raw[: geo.block]))


def landed(
    slot: RecordSlot, page_size: int, read: Callable[[int, int], bytes], crc32c: Crc32c
) -> bool:
    """Whether every page a one-barrier record lists holds what its commit wrote."""
    rec = slot.header
    assert rec is not None
    for page, crc, run in slot.listed:
        if not RESERVED_PAGES <= page < rec.page_count or run >= rec.page_count - page:
            return False
        got = 0
        for k in range(page, page + run + 1):  # page by page: a forged run reads the file once
            got = crc32c(read(k * page_size, page_size), got)
        if got != crc:
            return False
    return True


def in_force(
    slots: list[RecordSlot],
    page_size: int,
    file_size: int,
    read: Callable[[int, int], bytes],
    crc32c: Crc32c,
) -> tuple[list[RecordSlot], list[RecordSlot]]:
    """The well-formed, landed records, newest first, and the well-formed ones passed over
    because their one barrier did not complete (docs/FORMAT.md, "Which record is in force").

    Records newer than the newest landed one that did not land are passed over; older ones
    that did not land cannot be in force either and are left out. A newest record whose page
    count does not fit the file means the file was truncated: ``CorruptMetadata``.
    """
    good: list[RecordSlot] = []
    passed: list[RecordSlot] = []
    # newest first; of two records of one generation (a retired record and its copy), the
    # one that lists nothing
    for slot in sorted(
        (s for s in slots if s.header is not None),
        key=lambda s: (s.header.generation, not s.header.listed),  # type: ignore[union-attr]
        reverse=True,
    ):
        rec = slot.header
        assert rec is not None
        if rec.page_count * page_size > file_size:
            if good or passed:  # an older record, of a file that has grown since: not in force
                continue
            # a record is written only once the file's length is durable: it was truncated
            raise CorruptMetadata(
                f"the file is shorter than the state of generation {rec.generation} "
                f"({rec.page_count} pages): it was truncated"
            )
        if landed(slot, page_size, read, crc32c):
            good.append(slot)
        elif not good:
            passed.append(slot)
    return good, passed


# -- page 0 as a reader sees it ------------------------------------------------------------


class Version1(CorruptSuperblock):
    """A format-1 file that was never upgraded: ``Pager.open`` upgrades it, ``ReadOnlyPager``
    and ``check`` read it as it is."""


def file_size(fd: int) -> int:
    """The file's length, without asking for its times: on file systems with fine-grained
    timestamps (Linux 6.13 and later), a stat by a reader makes the writer's next change of
    the file stamp a new modification time, which costs its next sync one more write."""
    return os.lseek(fd, 0, os.SEEK_END)


class Header:
    """What page 0 says: page size, where the records are, the file id."""

    def __init__(self, fd: int, wanted: int, crc32c: Crc32c) -> None:
        self.size = file_size(fd)
        if self.size < 1024:
            raise CorruptSuperblock("not a mappedpages file: shorter than a superblock")
        head = os.pread(fd, 1536, 0)
        ident, crc = unpack_identity(head)
        if ident.magic != MAGIC:
            raise CorruptSuperblock("not a mappedpages file: bad magic")
        if crc != crc32c(head[:IDENTITY_CRC_OFFSET]):
            raise CorruptSuperblock("superblock identity checksum mismatch")
        ps = ident.page_size
        if ident.version not in (FORMAT_VERSION, V1_VERSION):
            raise CorruptSuperblock(f"format version {ident.version} is not supported")
        if not valid_page_size(ps):
            raise CorruptSuperblock(f"superblock page size {ps} is invalid")
        if wanted and wanted != ps:
            raise InvalidPageSize(f"the file's page size is {ps}, not {wanted}")
        if self.size < 4 * ps:
            raise CorruptSuperblock("file is shorter than its reserved pages")
        self.page_size = ps
        self.version = ident.version
        if ident.version == FORMAT_VERSION:
            self.records = (ident.record_0, ident.record_1)
            self.file_id = ident.file_id
            if self.records != (1, 2):
                raise CorruptSuperblock("superblock identity fields are not valid")
            self.reserved = frozenset((0, 1, 2))
            return
        up = upgrade_pointer(head, ps, crc32c)
        if up is None:
            raise Version1("a format-1 file: Pager.open upgrades it")
        self.records = (up.record_0, up.record_1)
        self.file_id = up.file_id
        self.reserved = frozenset((0, 1, 2, *self.records))
        if any(r < 3 or r * ps + ps > self.size for r in self.records) or len(self.reserved) != 5:
            raise CorruptSuperblock("the upgrade pointer names impossible record pages")


def upgrade_pointer(head: bytes, page_size: int, crc32c: Crc32c) -> Upgrade | None:
    """The format-2 upgrade pointer in a format-1 record sector of page 0, if there is one."""
    sectors = UPGRADE_SECTORS if page_size >= 2048 else UPGRADE_SECTORS[:1]
    for off in sectors:
        raw = head[off : off + UPGRADE_SIZE]
        if len(raw) < UPGRADE_SIZE or raw[:4] != UPGRADE_MAGIC:
            continue
        (crc,) = struct.unpack_from("<I", raw, UPGRADE_CRC_OFFSET)
        if crc == crc32c(raw[:UPGRADE_CRC_OFFSET]):
            return Upgrade(*UPGRADE.unpack_from(raw, 0))
    return None
