"""Version-1 files (mappedpages 0.1): reading their state by format 1's rules, for both cores.

``ReadOnlyPager`` and ``check`` read a format-1 file as it is (``load``, ``V1Snapshot``);
``Pager.open`` hands the state to its core, which upgrades the file in one commit
(docs/FORMAT.md, "Version 1 files"). Format 1 kept metadata copies A and B in pages 1 and 2,
two fixed copies of every bitmap group and directory block, and the commit record in page 0;
this module is the only place that still knows those bytes.
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from . import format as fmt
from .errors import CorruptMetadata, OutOfBounds, Unavailable

Crc = Callable[[bytes], int]

_RECORD = struct.Struct("<4sIQIIQ")  # magic, active, generation, meta_crc, log_len, meta_gen
_RECORD_OFFSET, _RECORD_SIZE, _RECORD_CRC = 512, 512, 508
_CHECKS_OFFSET, _CHECKS_MAX, _LOG_OFFSET, _LOG_MAX = 32, 6, 112, 396
_BLOCK = struct.Struct("<4sIQQQ")  # magic, crc of [8, M), generation, location, reserved
_META = struct.Struct("<QQQQ")  # page_count, free_count, dir_a, dir_b (at 32)
_META_BITS, _GROUP_BITS = 128, 32
_ENTRY = struct.Struct("<QQ")
_CURRENT_B = 1 << 63
_LOG_CURRENT_B = 1 << 31


class V1Error(CorruptMetadata):
    """A format-1 file whose state does not validate."""


@dataclass
class V1State:
    """A format-1 file's committed state."""

    page_size: int
    page_count: int
    free_count: int
    generation: int
    record_sector: int  # the record sector in force (the upgrade pointer goes in another)
    used: bytearray  # bits [0, page_count): in use, internal pages included
    data_pages: list[int] = field(default_factory=list)
    protected: dict[int, int] = field(default_factory=dict)  # slot -> page of its content
    slot_count: int = 0


class _Geo:
    def __init__(self, ps: int) -> None:
        self.ps = ps
        self.block = min(ps, 4096)
        self.c0 = (self.block - _META_BITS) * 8
        self.c = (self.block - _GROUP_BITS) * 8

    def groups(self, n: int) -> int:
        return 1 if n <= self.c0 else 1 + -(-(n - self.c0) // self.c)

    def start(self, k: int) -> int:
        return 0 if k == 0 else self.c0 + (k - 1) * self.c

    def is_group_copy(self, page: int) -> bool:
        return page >= self.c0 and (page - self.c0) % self.c < 2


def _block_gen(raw: bytes, page: int, magic: bytes, crc32c: Crc) -> int:
    m, crc, gen, loc, res = _BLOCK.unpack_from(raw, 0)
    if m != magic or loc != page or res or crc != crc32c(raw[8:]):
        return 0
    return int(gen)


def load(fd: int, crc32c: Crc) -> V1State:
    """Read and validate a format-1 file's committed state (format 1's rules)."""
    size = os.fstat(fd).st_size
    head = os.pread(fd, 1536, 0)
    ps = int.from_bytes(head[12:16], "little")
    geo = _Geo(ps)

    def read(off: int, n: int) -> bytes:
        return os.pread(fd, n, off)

    metas = [read(p * ps, geo.block) for p in (1, 2)]
    gens = [_block_gen(metas[i], 1 + i, b"MPMD", crc32c) for i in (0, 1)]
    nrec = 2 if ps >= 2048 else 1
    best: tuple[int, int, int, bytes] | None = None  # generation, sector, active, log
    for i in range(nrec):
        raw = head[_RECORD_OFFSET + i * _RECORD_SIZE : _RECORD_OFFSET + (i + 1) * _RECORD_SIZE]
        if len(raw) < _RECORD_SIZE:
            continue
        magic, active, gen, meta_crc, log_len, meta_gen = _RECORD.unpack_from(raw, 0)
        count, flags = struct.unpack_from("<II", raw, _CHECKS_OFFSET)
        if (
            magic != b"MPSL"
            or struct.unpack_from("<I", raw, _RECORD_CRC)[0] != crc32c(raw[:_RECORD_CRC])
            or active > 1
            or log_len > _LOG_MAX
            or log_len % 4
            or not 0 < meta_gen <= gen
            or flags > 1
            or count > (_CHECKS_MAX if flags else 0)
        ):
            continue
        meta = metas[active]
        if gens[active] != meta_gen or struct.unpack_from("<I", meta, 4)[0] != meta_crc:
            continue
        n = _META.unpack_from(meta, 32)[0]
        landed = True
        for j in range(count):
            page, crc = struct.unpack_from("<QI", raw, _CHECKS_OFFSET + 8 + 12 * j)
            if not 3 <= page < min(n, size // ps) or crc32c(read(page * ps, ps)) != crc:
                landed = False
        if landed and (best is None or gen > best[0]):
            best = (gen, _RECORD_OFFSET + i * _RECORD_SIZE, active, raw[_LOG_OFFSET:][:log_len])
    if best is None:  # format 1's rule 2: the newer valid metadata copy, with an empty log
        if not any(gens):
            raise V1Error("format 1: neither metadata copy is valid")
        active = 0 if gens[0] >= gens[1] else 1
        best = (gens[active], _RECORD_OFFSET, active, b"")
    gen, sector, active, log = best
    n, free, dir_a, dir_b = _META.unpack_from(metas[active], 32)
    if n < 3 or n * ps > size:
        raise V1Error(f"format 1: page count {n} does not fit the file")
    used = bytearray((n + 7) // 8)

    def put(first: int, bits: bytes, count: int) -> None:
        value = int.from_bytes(bits[: (count + 7) // 8], "little") & ((1 << count) - 1)
        old = int.from_bytes(used, "little")
        merged = old | value << first
        used[:] = merged.to_bytes(len(used), "little")

    put(0, metas[active][_META_BITS:], min(geo.c0, n))
    for k in range(1, geo.groups(n)):
        s = geo.start(k)
        copies = [read((s + i) * ps, geo.block) for i in (0, 1)]
        cand = [(_block_gen(copies[i], s + i, b"MPBG", crc32c), i) for i in (0, 1)]
        fit = [(g, i) for g, i in cand if 0 < g <= gen]
        if not fit:
            raise V1Error(f"format 1: bitmap group {k} has no valid copy")
        _, i = max(fit)
        put(s, copies[i][_GROUP_BITS:], min(geo.c, n - s))
    value = int.from_bytes(used, "little")
    if n - value.bit_count() != free:
        raise V1Error("format 1: the free count disagrees with the bitmap")
    internal = {0, 1, 2}
    internal.update(p for k in range(1, geo.groups(n)) for p in (geo.start(k), geo.start(k) + 1))
    state = V1State(ps, n, free, gen, sector, used)
    if dir_a:
        _load_directory(read, geo, gen, n, (dir_a, dir_b), log, crc32c, state, internal)
    elif log:
        raise V1Error("format 1: a commit-record log without a directory")
    for page in internal:
        if page >= n or not used[page >> 3] >> (page & 7) & 1:
            raise V1Error(f"format 1: internal page {page} is not marked in use")
    state.data_pages = [p for p in range(3, n) if used[p >> 3] >> (p & 7) & 1 and p not in internal]
    return state


def _load_directory(
    read: Callable[[int, int], bytes],
    geo: _Geo,
    gen: int,
    n: int,
    index_pages: tuple[int, int],
    log: bytes,
    crc32c: Crc,
    state: V1State,
    internal: set[int],
) -> None:
    ps = geo.ps

    def current(pages: tuple[int, int], magic: bytes) -> bytes:
        copies = [read(p * ps, geo.block) for p in pages]
        fit = [
            (g, i)
            for i in (0, 1)
            if 0 < (g := _block_gen(copies[i], pages[i], magic, crc32c)) <= gen
        ]
        if not fit:
            raise V1Error(f"format 1: no valid copy of directory pages {pages}")
        return copies[max(fit)[1]]

    def claim(page: int) -> None:
        if not 3 <= page < n or geo.is_group_copy(page) or page in internal:
            raise V1Error(f"format 1: directory page {page} is outside the file or used twice")
        internal.add(page)

    claim(index_pages[0])
    claim(index_pages[1])
    index = current(index_pages, b"MPDI")
    (count,) = struct.unpack_from("<Q", index, 32)
    per = (geo.block - 64) // 16
    if count > per:
        raise V1Error(f"format 1: the directory index lists {count} blocks")
    cur: dict[int, tuple[int, int, int]] = {}  # slot -> page a, page b, current
    for b in range(count):
        p0, p1 = _ENTRY.unpack_from(index, 64 + 16 * b)
        claim(p0)
        claim(p1)
        block = current((p0, p1), b"MPDB")
        for i in range(per):
            w0, pb = _ENTRY.unpack_from(block, 64 + 16 * i)
            pa = w0 & ~_CURRENT_B
            if pa:
                claim(pa)
                claim(pb)
                cur[b * per + i] = (pa, pb, 1 if w0 & _CURRENT_B else 0)
    for (word,) in struct.iter_unpack("<I", log):
        slot = word & ~_LOG_CURRENT_B
        if slot not in cur:
            raise V1Error(f"format 1: the commit record's log names slot {slot}")
        pa, pb, _ = cur[slot]
        cur[slot] = (pa, pb, 1 if word & _LOG_CURRENT_B else 0)
    state.protected = {s: (pb if c else pa) for s, (pa, pb, c) in cur.items()}
    state.slot_count = count * per


class V1Snapshot:
    """A format-1 file's state with the read interface of a snapshot core (static: no
    format-1 writer can be running, and an upgrade leaves this state as it was read)."""

    def __init__(self, fd: int, wanted: int, crc32c: Crc) -> None:
        self._state = state = load(fd, crc32c)
        if wanted and wanted != state.page_size:
            from .errors import InvalidPageSize

            raise InvalidPageSize(f"the file's page size is {state.page_size}, not {wanted}")
        self.geometry = fmt.Geometry(state.page_size)
        size = max(state.page_count * state.page_size, os.fstat(fd).st_size)
        self._view = memoryview(mmap.mmap(fd, size, access=mmap.ACCESS_READ)).toreadonly()
        self._data = set(state.data_pages)
        self._slots = sorted(state.protected)
        self._crc32c = crc32c
        self._closed = False

    def _live(self) -> None:
        if self._closed:
            raise Unavailable("the snapshot is closed")

    page_size = property(lambda self: self._state.page_size)
    generation = property(lambda self: self._state.generation)
    data_count = property(lambda self: len(self._data))
    slot_count = property(lambda self: self._state.slot_count)
    slots_used = property(lambda self: len(self._slots))
    record_slot = property(lambda self: 0)

    def record_block(self) -> None:
        return None  # no format-2 writer rewrites a format-1 file's metadata

    @property
    def page_count(self) -> int:
        self._live()
        return self._state.page_count

    @property
    def free_count(self) -> int:
        self._live()
        return self._state.free_count

    def kind(self, page: int) -> int:
        self._live()
        if not 0 <= page < self._state.page_count:
            raise OutOfBounds(f"page {page} is beyond the file ({self._state.page_count} pages)")
        if page in self._data:
            return 1
        used = self._state.used
        return 2 if used[page >> 3] >> (page & 7) & 1 else 0

    def kinds(self, start: int, n: int) -> bytes:
        return bytes(self.kind(page) for page in range(start, start + n))

    def scan(self, start: int, limit: int) -> list[int]:
        import bisect

        pages = self._state.data_pages
        i = bisect.bisect_left(pages, start)
        return pages[i : i + limit]

    def pused(self, slot: int) -> bool:
        return slot in self._state.protected

    def ppage(self, slot: int) -> int:
        self._live()
        if slot not in self._state.protected:
            raise OutOfBounds(f"protected page {slot} is not allocated")
        return self._state.protected[slot]

    def pscan(self, start: int, limit: int) -> list[int]:
        import bisect

        i = bisect.bisect_left(self._slots, start)
        return self._slots[i : i + limit]

    def mapping(self) -> memoryview:
        self._live()
        return self._view

    def newer(self) -> bool:
        return False

    def refresh(self) -> bool:
        return False

    def close(self) -> None:
        self._closed = True
