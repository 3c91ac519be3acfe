"""Protected pages: the directory that maps each protected page to its two copies.

docs/FORMAT.md ("Protected pages") describes the bytes. In short: the metadata names the two
copies of the *index*; the index lists the *directory blocks*, each also kept in two copies;
a directory block holds one 16-byte entry per protected page: its two copy pages and which one
holds the committed content. Blocks follow the rule of bitmap groups: the current copy is the
valid one with the highest generation not above the committed one, and a commit writes the
other copy. Nothing here is written except during a commit (``write``), so the mapping always
holds the committed directory, and rollback is a reload.

This module is shared by both cores: the core commits (and syncs) the pages it is told about
through ``Core.stage``, and keeps the index's pages in the metadata (``Core.set_directory``).
"""

from __future__ import annotations

import heapq
import struct
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from . import format as fmt
from .errors import CorruptDirectoryIndex, CorruptProtectedDirectory, DirectoryFull, Unavailable
from .handles import ProtectedPageId, new_protected_id

if TYPE_CHECKING:
    from .pager import Pager

__all__ = ["AllocatedProtectedPageIter", "Directory", "ProtectedPageWriter"]

Crc = Callable[[Any], int]
_FLAG = fmt.DIR_CURRENT_B
_U64 = struct.Struct("<Q")


def _choose(
    view: memoryview, geo: fmt.Geometry, pages: tuple[int, int], magic: bytes, gen: int, crc: Crc
) -> tuple[int, bool]:
    """(current copy or -1, whether a copy is a leftover newer than ``gen``)."""
    best, best_gen, stale = -1, 0, False
    for i, page in enumerate(pages):
        off = page * geo.page_size
        block = view[off : off + geo.block]
        m, c, g, loc, res = fmt.BLOCK_HEADER.unpack_from(block, 0)
        if m != magic or loc != page or res != 0 or g == 0 or c != crc(block[8:]):
            continue
        if g > gen:
            stale = True
        elif g > best_gen:
            best, best_gen = i, g
    return best, stale


class Directory:
    """The protected-page directory of one pager, in memory."""

    def __init__(self, geo: fmt.Geometry) -> None:
        self.geo = geo
        self.per_block = fmt.dir_capacity(geo.block)
        self.max_blocks = fmt.dir_capacity(geo.block)
        self.index_pages = (0, 0)
        self.index_cur = 0
        self.blocks: list[tuple[int, int]] = []
        self.block_cur: list[int] = []
        # each block's bytes as the next write will store them (header filled in then): an
        # entry change patches 16 bytes here instead of re-encoding the whole block
        self.bodies: list[bytearray] = []
        # per slot: page a, page b, 1 when b is current; page a 0 = free slot
        self.ent_a: list[int] = []
        self.ent_b: list[int] = []
        self.ent_cur: list[int] = []
        self.serial: list[int] = []  # changes whenever a slot is allocated: stale writers notice
        self.free_heap: list[int] = []
        self.internal: set[int] = set()  # every page the directory uses
        self.dirty: set[int] = set()  # blocks to write at the next commit
        self.index_dirty = False
        self.new: set[int] = set()  # blocks (and -1 for the index) made since the last commit
        self.uncommitted: set[int] = set()  # slots whose current copy is not committed yet
        # slot -> current flag, for slots switched since their block was last written: the
        # commit record carries these, so that a protected write commits one page and the
        # record instead of rewriting its directory block (and the commit writing blocks next
        # writes theirs too and empties it)
        self.log: dict[int, int] = {}
        self.log_room = (fmt.record_count(geo.page_size) > 1) * fmt.RECORD_LOG_MAX // 4
        self.log_changed = False
        self._serial = 0

    # -- loading -------------------------------------------------------------------------

    @classmethod
    def load(cls, view: memoryview, core: Any, crc: Crc) -> Directory:
        """Read and validate the committed directory of ``core`` from ``view``."""
        geo: fmt.Geometry = core.geometry
        d = cls(geo)
        dir_a, dir_b = core.directory
        log = core.log
        if dir_a == 0:
            if log:
                raise CorruptProtectedDirectory("the commit record has a log but no directory")
            return d
        n, gen = core.page_count, core.generation
        cur, stale = _choose(view, geo, (dir_a, dir_b), fmt.DIR_INDEX_MAGIC, gen, crc)
        if cur < 0:
            raise CorruptDirectoryIndex("no valid copy of the protected-page directory index")
        d.index_pages, d.index_cur, d.index_dirty = (dir_a, dir_b), cur, stale
        off = (dir_a, dir_b)[cur] * geo.page_size
        index = view[off : off + geo.block]
        (count,) = _U64.unpack_from(index, fmt.DIR_COUNT_OFFSET)
        if count > d.max_blocks:
            raise CorruptDirectoryIndex(f"directory index lists {count} blocks")
        seen = {dir_a, dir_b}

        def claim(page: int, error: type[Exception]) -> None:
            if not 3 <= page < n or geo.is_internal(page) or page in seen:
                raise error(f"directory page {page} is outside the file or used twice")
            if not core.is_allocated(page):
                raise error(f"directory page {page} is not marked in use")
            seen.add(page)

        for b in range(count):
            p0, p1 = fmt.DIR_ENTRY.unpack_from(index, fmt.DIR_ENTRIES_OFFSET + 16 * b)
            claim(p0, CorruptDirectoryIndex)
            claim(p1, CorruptDirectoryIndex)
            bcur, bstale = _choose(view, geo, (p0, p1), fmt.DIR_BLOCK_MAGIC, gen, crc)
            if bcur < 0:
                raise CorruptProtectedDirectory(f"directory block {b} has no valid copy")
            off = (p0, p1)[bcur] * geo.page_size
            block = view[off : off + geo.block]
            if _U64.unpack_from(block, fmt.DIR_COUNT_OFFSET)[0] != b:
                raise CorruptProtectedDirectory(f"directory block {b} is not where it belongs")
            d.blocks.append((p0, p1))
            d.block_cur.append(bcur)
            d.bodies.append(bytearray(block))
            if bstale:
                d.dirty.add(b)
            for i in range(d.per_block):
                w0, pb = fmt.DIR_ENTRY.unpack_from(block, fmt.DIR_ENTRIES_OFFSET + 16 * i)
                pa = w0 & ~_FLAG
                if pa == 0:
                    if w0 or pb:
                        raise CorruptProtectedDirectory(f"directory block {b}: bad free entry")
                    d._append(0, 0, 0)
                    continue
                claim(pa, CorruptProtectedDirectory)
                claim(pb, CorruptProtectedDirectory)
                d._append(pa, pb, 1 if w0 & _FLAG else 0)
        d.internal = seen
        for (word,) in fmt.LOG_ENTRY.iter_unpack(log):
            slot = word & ~fmt.LOG_CURRENT_B
            if not d.is_used(slot) or slot in d.log:
                raise CorruptProtectedDirectory(f"the commit record's log names slot {slot}")
            d.log[slot] = d.ent_cur[slot] = 1 if word & fmt.LOG_CURRENT_B else 0
            d._patch(slot)
        return d

    def _append(self, pa: int, pb: int, cur: int) -> None:
        slot = len(self.ent_a)
        self.ent_a.append(pa)
        self.ent_b.append(pb)
        self.ent_cur.append(cur)
        self.serial.append(0)
        if not pa:
            heapq.heappush(self.free_heap, slot)

    @property
    def needs_repair(self) -> bool:
        """Leftover copies newer than the committed state: the next commit must overwrite them."""
        return self.index_dirty or bool(self.dirty)

    # -- queries -------------------------------------------------------------------------

    def is_used(self, slot: int) -> bool:
        return 0 <= slot < len(self.ent_a) and self.ent_a[slot] != 0

    def current_page(self, slot: int) -> int:
        return self.ent_b[slot] if self.ent_cur[slot] else self.ent_a[slot]

    def room(self) -> int:
        """Slots that can still be allocated, counting blocks not made yet."""
        return len(self.free_heap) + (self.max_blocks - len(self.blocks)) * self.per_block

    def used_slots(self, start: int) -> Iterator[int]:
        ent_a = self.ent_a
        for slot in range(max(start, 0), len(ent_a)):
            if ent_a[slot]:
                yield slot

    # -- changes (in memory until write) ---------------------------------------------------

    def create_index(self, p0: int, p1: int) -> None:
        self.index_pages, self.index_cur = (p0, p1), 1  # the first write goes to copy 0
        self.index_dirty = True
        self.new.add(-1)
        self.internal.update((p0, p1))

    def add_block(self, p0: int, p1: int) -> None:
        if len(self.blocks) >= self.max_blocks:
            raise DirectoryFull("the protected-page directory is full")
        b = len(self.blocks)
        self.blocks.append((p0, p1))
        self.block_cur.append(1)
        body = bytearray(self.geo.block)
        _U64.pack_into(body, fmt.DIR_COUNT_OFFSET, b)
        self.bodies.append(body)
        self.new.add(b)
        self.dirty.add(b)
        self.index_dirty = True
        self.internal.update((p0, p1))
        for _ in range(self.per_block):
            self._append(0, 0, 0)

    def take_slot(self, pa: int, pb: int) -> int:
        slot = heapq.heappop(self.free_heap)
        self.ent_a[slot], self.ent_b[slot], self.ent_cur[slot] = pa, pb, 0
        self._serial += 1
        self.serial[slot] = self._serial
        self.internal.update((pa, pb))
        self.uncommitted.add(slot)  # its content (zeros) is written in place, not copied
        self._encode(slot)
        return slot

    def release_slot(self, slot: int) -> tuple[int, int]:
        pages = (self.ent_a[slot], self.ent_b[slot])
        self.ent_a[slot] = self.ent_b[slot] = self.ent_cur[slot] = 0
        self.serial[slot] = 0
        self.internal.difference_update(pages)
        self.uncommitted.discard(slot)
        heapq.heappush(self.free_heap, slot)
        self._encode(slot)
        return pages

    def write_target(self, slot: int) -> int:
        """The page a new version of ``slot`` goes to, switching the slot over to it.

        A slot already switched since the last commit is written in place: its current copy is
        not the committed one, and the committed one must stay untouched until the commit.
        """
        if slot not in self.uncommitted:
            self.ent_cur[slot] ^= 1
            self.uncommitted.add(slot)
            log = self.log
            room = slot in log or len(log) < self.log_room
            if room and slot // self.per_block not in self.dirty:
                log[slot] = self.ent_cur[slot]
                self.log_changed = True
                self._patch(slot)
            else:
                self._encode(slot)
        return self.current_page(slot)

    def _encode(self, slot: int) -> None:
        """Patch the slot's entry into its block's bytes and mark the block for writing."""
        self._patch(slot)
        self.dirty.add(slot // self.per_block)

    def _patch(self, slot: int) -> None:
        b, i = divmod(slot, self.per_block)
        pa = self.ent_a[slot]
        w0 = pa | (_FLAG if pa and self.ent_cur[slot] else 0)
        off = fmt.DIR_ENTRIES_OFFSET + 16 * i
        fmt.DIR_ENTRY.pack_into(self.bodies[b], off, w0, self.ent_b[slot])

    # -- commit --------------------------------------------------------------------------

    def record_log(self) -> bytes | None:
        """The log the next commit record carries, or None when it stays as it is.

        A commit that writes blocks writes those of the logged slots too, and empties the log.
        """
        if self.log and (self.dirty or self.index_dirty):
            self.dirty.update(slot // self.per_block for slot in self.log)
            self.log.clear()
            self.log_changed = True
        if not self.log_changed:
            return None
        flag = fmt.LOG_CURRENT_B
        return b"".join(fmt.LOG_ENTRY.pack(s | (flag if c else 0)) for s, c in self.log.items())

    def write(self, view: memoryview, generation: int, crc: Crc) -> list[int]:
        """Write every changed block to its non-current copy; return the pages written."""
        geo, written = self.geo, []
        if self.index_dirty:
            body = bytearray(geo.block)
            _U64.pack_into(body, fmt.DIR_COUNT_OFFSET, len(self.blocks))
            for b, pair in enumerate(self.blocks):
                fmt.DIR_ENTRY.pack_into(body, fmt.DIR_ENTRIES_OFFSET + 16 * b, *pair)
            written += self._put(view, -1, self.index_pages, self.index_cur, body, generation, crc)
        for b in sorted(self.dirty):
            pages, body = self.blocks[b], self.bodies[b]
            written += self._put(view, b, pages, self.block_cur[b], body, generation, crc)
        return written

    def _put(
        self,
        view: memoryview,
        key: int,
        pages: tuple[int, int],
        cur: int,
        body: bytearray,
        generation: int,
        crc: Crc,
    ) -> list[int]:
        geo = self.geo
        target = pages[1 - cur]
        magic = fmt.DIR_INDEX_MAGIC if key < 0 else fmt.DIR_BLOCK_MAGIC
        fmt.BLOCK_HEADER.pack_into(body, 0, magic, 0, generation, target, 0)
        struct.pack_into("<I", body, 4, crc(memoryview(body)[8:]))
        off = target * geo.page_size
        view[off : off + geo.block] = body
        if key in self.new:  # the other copy may hold bytes of an older attempt
            other = pages[1] * geo.page_size
            view[other : other + fmt.BLOCK_HEADER_SIZE] = bytes(fmt.BLOCK_HEADER_SIZE)
            return [target, pages[1]]
        return [target]

    def committed(self) -> None:
        """The commit that wrote ``write``'s blocks is durable: they are current now."""
        if self.index_dirty:
            self.index_cur ^= 1
        for b in self.dirty:
            self.block_cur[b] ^= 1
        self.dirty.clear()
        self.index_dirty = False
        self.new.clear()
        self.uncommitted.clear()
        self.log_changed = False


class ProtectedPageWriter:
    """A staged write of one protected page (``ppid.get_mut(pager)``).

    The staged copy is a private buffer that starts as the committed content; ``commit``
    copies it into the page's other copy, makes that durable and switches to it in one commit.
    Used as a context manager it commits on a clean exit and discards on an exception.
    """

    __slots__ = ("_buf", "_done", "_pager", "_pid", "_serial")

    def __init__(self, pager: Pager, pid: ProtectedPageId, serial: int, content: bytes) -> None:
        self._pager = pager
        self._pid = pid
        self._serial = serial
        self._buf = bytearray(content)
        self._done = False

    @property
    def id(self) -> ProtectedPageId:
        return self._pid

    def page_mut(self) -> memoryview:
        """Writable view of the staged copy."""
        if self._done:
            raise Unavailable("this writer has already committed or discarded")
        return memoryview(self._buf)

    def commit(self) -> None:
        """Make the staged copy the committed content, atomically and durably."""
        if self._done:
            raise Unavailable("this writer has already committed or discarded")
        self._pager._commit_protected(self._pid, self._serial, self._buf)
        self._done = True
        self._buf = bytearray()

    def discard(self) -> None:
        """Drop the staged copy; the committed content stays."""
        self._done = True
        self._buf = bytearray()

    def __enter__(self) -> ProtectedPageWriter:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None and not self._done:
            self.commit()
        else:
            self.discard()

    def __repr__(self) -> str:
        state = "done" if self._done else "staged"
        return f"<ProtectedPageWriter {self._pid!r} {state}>"


class AllocatedProtectedPageIter(Iterator[ProtectedPageId]):
    """Ascending ids of the allocated protected pages; invalid once allocation state changes."""

    __slots__ = ("_it", "_owner", "_ps", "_version")

    def __init__(self, owner: Any, directory: Directory, page_size: int) -> None:
        self._owner = owner
        self._version = owner._version
        self._it = directory.used_slots(0)
        self._ps = page_size

    def __iter__(self) -> AllocatedProtectedPageIter:
        return self

    def __next__(self) -> ProtectedPageId:
        if self._owner._version != self._version:
            if self._owner._closed_or_dead():
                raise Unavailable("the pager was closed while iterating")
            raise RuntimeError("allocation state changed during iteration")
        return new_protected_id(next(self._it), self._ps)
