"""Snapshots: the state of one commit, read lazily from the blocks its record names (which no
writer rewrites while the snapshot is registered) and from its log. Mirrors csrc/snapshot.c."""

from __future__ import annotations

import bisect
import mmap
import os
import threading
from collections.abc import Callable

from .. import format as fmt
from ..errors import CorruptMetadata, CorruptProtectedDirectory, OutOfBounds, Unavailable
from ..format import Header
from . import log
from .alloc import DATA, FREE, INTERNAL
from .crc import crc32c
from .open import read_slots
from .tree import BITMAP, DIRECTORY, Reader


class Snapshot:
    """One commit's state, read-only (see _core_api.SnapshotCore)."""

    _rec: fmt.Record
    _log: bytes
    _slot: fmt.RecordSlot

    def __init__(
        self,
        geo: fmt.Geometry,
        view: memoryview,
        slot: fmt.RecordSlot,
        release: Callable[[], None] | None = None,
        fd: int = -1,
        header: Header | None = None,
    ) -> None:
        self._lock = threading.RLock()  # refresh() against reads from other threads
        self.geometry = geo
        self._view = view
        self._release = release
        self._fd = fd
        self._header = header
        self._closed = False
        self._adopt(slot, None)

    # -- the state ------------------------------------------------------------------------

    def _adopt(self, slot: fmt.RecordSlot, old: Snapshot | None) -> None:
        rec = slot.header
        assert rec is not None
        same_trees = (
            old is not None
            and old._rec.checkpoint == rec.checkpoint
            and slot.log.startswith(old._log)
        )
        self._slot = slot
        self._rec = rec
        self._reader = Reader(self._view, self.geometry, rec.page_count, rec.checkpoint, crc32c)
        pages: list[tuple[int, int, int]]  # the log's changes: disjoint runs, ascending
        if same_trees and old is not None:  # the old log is a prefix: read only what follows
            pages, slots, start = list(old._runs), dict(old._slots), len(old._log)
        else:
            self._leaves: dict[tuple[int, int], bytes | None] = {}
            self._verified: set[int] = set()
            pages, slots, start = [], {}, 0
        log.check_generations(slot.log, rec.checkpoint, rec.generation)
        for kind, a, b, crc in log.entries(slot.log[start:]):
            if kind == fmt.SLOT:
                slots[a] = (b, crc)
                self._verified.discard(a)
            elif kind in fmt.RUN_KINDS:
                if a + b > rec.page_count:
                    raise CorruptMetadata("the log names pages beyond the file")
                new = DATA if kind == fmt.DATA else INTERNAL if kind == fmt.INTERNAL else FREE
                _put_run(pages, a, b, new)
        self._runs: list[tuple[int, int, int]] = pages
        self._starts = [r[0] for r in pages]
        self._slots: dict[int, tuple[int, int]] = slots
        self._log = slot.log

    def _live(self) -> None:
        if self._closed:
            raise Unavailable("the snapshot is closed")

    def record_block(self) -> bytes:
        with self._lock:
            self._live()
            return self._slot.raw

    @property
    def generation(self) -> int:
        return self._rec.generation

    @property
    def page_size(self) -> int:
        return self.geometry.page_size

    @property
    def page_count(self) -> int:
        self._live()
        return self._rec.page_count

    @property
    def free_count(self) -> int:
        self._live()
        return self._rec.free_count

    @property
    def data_count(self) -> int:
        return self._rec.data_count

    @property
    def slot_count(self) -> int:
        return self._rec.slot_count

    @property
    def slots_used(self) -> int:
        return self._rec.slots_used

    @property
    def record_slot(self) -> int:
        return self._slot.number

    def mapping(self) -> memoryview:
        self._live()
        return self._view

    # -- pages ----------------------------------------------------------------------------

    def _leaf(self, tree: int, index: int) -> bytes | None:
        key = (tree, index)
        if key not in self._leaves:
            rec = self._rec
            if tree == 0:
                root, height, kind = (rec.bitmap_root, rec.bitmap_crc), rec.bitmap_height, BITMAP
            else:
                root, height, kind = (rec.dir_root, rec.dir_crc), rec.dir_height, DIRECTORY
            self._leaves[key] = self._reader.leaf(kind, root, height, index)
        return self._leaves[key]

    def _leaf_bits(self, index: int) -> tuple[int, int]:
        """(used, data) bits of bitmap leaf ``index`` as ints."""
        raw = self._leaf(0, index)
        if raw is None:
            return 0, 0
        b = self.geometry.leaf_bytes
        return int.from_bytes(raw[32 : 32 + b], "little"), int.from_bytes(
            raw[32 + b : 32 + 2 * b], "little"
        )

    def kind(self, page: int) -> int:
        with self._lock:
            self._live()
            if not 0 <= page < self._rec.page_count:
                raise OutOfBounds(f"page {page} is beyond the file ({self._rec.page_count} pages)")
            changed = self._run_kind(page)
            if changed is not None:
                return changed
            lp = self.geometry.leaf_pages
            used, data = self._leaf_bits(page // lp)
            bit = page % lp
            if not used >> bit & 1:
                return FREE
            return DATA if data >> bit & 1 else INTERNAL

    def kinds(self, start: int, n: int) -> bytes:
        with self._lock:
            if start < 0 or n < 0 or start + n > self._rec.page_count:
                raise OutOfBounds(f"pages {start} .. {start + n} are beyond the file")
            return bytes(self.kind(page) for page in range(start, start + n))

    def scan(self, start: int, limit: int) -> list[int]:
        with self._lock:
            self._live()
            out: list[int] = []
            lp, n = self.geometry.leaf_pages, self._rec.page_count
            page = max(start, 0)
            runs = self._runs
            while page < n and len(out) < limit:
                leaf = page // lp
                base, end = leaf * lp, min((leaf + 1) * lp, n)
                _, data = self._leaf_bits(leaf)
                i = max(0, bisect.bisect_right(self._starts, base) - 1)
                while i < len(runs) and runs[i][0] < end:  # the log's changes in this leaf's range
                    first, count, kind = runs[i]
                    lo, hi = max(first, base), min(first + count, end)
                    if lo < hi:
                        mask = ((1 << (hi - lo)) - 1) << (lo - base)
                        data = data | mask if kind == DATA else data & ~mask
                    i += 1
                data >>= page - base
                while data and len(out) < limit:
                    low = data & -data
                    out.append(page + low.bit_length() - 1)
                    data ^= low
                page = end
            return out

    def _run_kind(self, page: int) -> int | None:
        i = bisect.bisect_right(self._starts, page) - 1
        if i >= 0:
            first, count, kind = self._runs[i]
            if page < first + count:
                return kind
        return None

    # -- protected pages ------------------------------------------------------------------

    def _entry(self, slot: int) -> tuple[int, int]:
        if slot in self._slots:
            return self._slots[slot]
        if not 0 <= slot < self._rec.slot_count or not self._rec.dir_root:
            return 0, 0
        f = self.geometry.fanout
        raw = self._leaf(1, slot // f)
        if raw is None:
            return 0, 0
        page, crc = fmt.ENTRY.unpack_from(raw, 32 + 16 * (slot % f))
        return page, crc

    def pused(self, slot: int) -> bool:
        with self._lock:
            self._live()
            return self._entry(slot)[0] != 0

    def ppage(self, slot: int) -> int:
        """The page holding the slot's content, checked against its CRC32C on first use."""
        with self._lock:
            self._live()
            page, crc = self._entry(slot)
            if not page:
                raise OutOfBounds(f"protected page {slot} is not allocated")
            if slot not in self._verified:
                if not fmt.RESERVED_PAGES <= page < self._rec.page_count:
                    raise CorruptProtectedDirectory(f"protected page {slot} names page {page}")
                ps = self.geometry.page_size
                if crc32c(self._view[page * ps : (page + 1) * ps]) != crc:
                    raise CorruptProtectedDirectory(
                        f"protected page {slot}: its content (page {page}) "
                        "does not match its checksum"
                    )
                self._verified.add(slot)
            return page

    def pscan(self, start: int, limit: int) -> list[int]:
        with self._lock:
            self._live()
            out: list[int] = []
            f, count = self.geometry.fanout, self._rec.slot_count
            slot = max(start, 0)
            while slot < count and len(out) < limit:
                leaf = slot // f
                end = min((leaf + 1) * f, count)
                raw = self._leaf(1, leaf) if self._rec.dir_root else None
                for s in range(slot, end):
                    if s in self._slots:
                        used = self._slots[s][0] != 0
                    else:
                        used = raw is not None and fmt.ENTRY.unpack_from(raw, 32 + 16 * (s % f))[0]
                    if used:
                        out.append(s)
                        if len(out) == limit:
                            break
                slot = end
            return out

    # -- moving on ------------------------------------------------------------------------

    def newer(self) -> bool:
        """Whether the other record slot may hold a newer commit (a cheap look at it)."""
        with self._lock:
            self._live()
            if self._header is None:
                return False
            ps = self.geometry.page_size
            # A commit since goes to the other slot first, so its generation alone says
            # whether there is one: the common case takes one read. A file shorter than this
            # state was truncated, unless a newer record fits it: it shrank (the newest may
            # then be in this slot, rewritten two commits on), or grew back meanwhile (the
            # length is taken again). The length comes first, and a shrink writes its record
            # before it cuts.
            size = fmt.file_size(self._fd)
            newer = False
            own = self._slot.number
            for slot in (1 - own, own):
                raw = os.pread(self._fd, 24, self._header.records[slot] * ps)
                if len(raw) < 24 or int.from_bytes(raw[8:16], "little") <= self._rec.generation:
                    break
                newer = True
                n = int.from_bytes(raw[16:24], "little")
                if n <= size // ps or n <= (size := fmt.file_size(self._fd)) // ps:
                    return True
            if size // ps < self._rec.page_count:  # truncated: its pages are not read on
                raise CorruptMetadata(
                    f"the file is {size} bytes long, shorter than its {self._rec.page_count} "
                    "pages: it was truncated"
                )
            return newer

    def refresh(self) -> bool:
        """Move to the newest commit of the file; False when there is none newer."""
        with self._lock:
            self._live()
            if self._header is None:
                raise Unavailable("a snapshot of a writer's commit does not refresh")
            if not self.newer():
                return False
            slot = newest(self._fd, self._header, self.geometry, self._view)
            if slot.header is None or slot.header.generation <= self._rec.generation:
                return False
            rec = slot.header
            if rec.page_count * self.geometry.page_size > len(self._view):
                self._view = map_readonly(self._fd, rec.page_count * self.geometry.page_size)
            old = Snapshot.__new__(Snapshot)
            old.__dict__.update(self.__dict__)
            self._adopt(slot, old)
            return True

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._release is not None:
                self._release()


def _put_run(runs: list[tuple[int, int, int]], first: int, count: int, kind: int) -> None:
    """Put pages [first, first + count) of ``kind`` over disjoint ascending runs."""
    end = first + count
    out: list[tuple[int, int, int]] = []
    for a, n, k in runs:
        b = a + n
        if b <= first or a >= end:
            out.append((a, n, k))
            continue
        if a < first:
            out.append((a, first - a, k))
        if b > end:
            out.append((end, b - end, k))
    out.append((first, count, kind))
    out.sort()
    runs[:] = out


def map_readonly(fd: int, length: int) -> memoryview:
    """The whole file, mapped (at least ``length`` bytes, unless it shrank since the record
    asking for them was read: the pages it cut are free in that record's state too, since a
    shrink cuts no page the reader's registered generation, older, may still read; and
    Python's mmap maps no further than the end of the file)."""
    while True:
        try:
            mm = mmap.mmap(fd, fmt.file_size(fd), access=mmap.ACCESS_READ)
            break
        except ValueError:  # it shrank between the size and the mapping
            continue
    return memoryview(mm).toreadonly()


def newest(
    fd: int, header: Header, geo: fmt.Geometry, view: memoryview | None = None
) -> fmt.RecordSlot:
    """The record in force now (docs/FORMAT.md, "Which record is in force")."""
    while True:
        slots = read_slots(fd, header, geo, stable=True)
        # the size after the records: a writer grows the file before it writes a record
        # naming the larger size, so a size taken before could be too small for the record
        # read after
        header.size = fmt.file_size(fd)
        try:
            good, passed = fmt.in_force(
                slots, geo.page_size, header.size, lambda off, n: os.pread(fd, n, off), crc32c
            )
            failure = None
        except CorruptMetadata as exc:
            good, passed, failure = [], [], exc
        if good and not passed:
            break
        # A shrink cuts the file only once the record of the smaller size is durable, so a
        # size taken after that cut, with records read before it, is too small for the newest
        # record read; and the pages a record lists may be written once a record after it, or
        # its retired copy, is in force. Either way the records have changed since. If not,
        # it was truncated or damaged, or the record passed over was cut short.
        if [s.raw for s in read_slots(fd, header, geo)] == [s.raw for s in slots]:
            if failure is not None:
                raise failure
            break
    if not good:
        raise CorruptMetadata("no valid commit record")
    return good[0]


def open_file(fd: int, wanted: int) -> Snapshot:
    """A snapshot of the newest commit of the file behind ``fd``."""
    header = Header(fd, wanted, crc32c)
    geo = fmt.Geometry(header.page_size)
    slot = newest(fd, header, geo)
    assert slot.header is not None
    view = map_readonly(fd, slot.header.page_count * geo.page_size)
    return Snapshot(geo, view, slot, fd=fd, header=header)


def newest_generation(fd: int, wanted: int) -> int:
    header = Header(fd, wanted, crc32c)
    slot = newest(fd, header, fmt.Geometry(header.page_size))
    assert slot.header is not None
    return slot.header.generation
