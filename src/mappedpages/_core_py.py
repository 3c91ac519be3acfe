"""The pure-Python core: the same interface and file format as the C core, with the stdlib.

See _core_api.py for the interface and docs/FORMAT.md for every byte written here.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import re
import struct
from collections.abc import Callable, Sequence
from typing import Any

from . import format as fmt
from .errors import (
    CorruptMetadata,
    CorruptSuperblock,
    DoubleFree,
    InvalidPageSize,
    OutOfBounds,
    ReservedPage,
    Unavailable,
)

NAME = "python"

_TABLE = []
for _n in range(256):
    _c = _n
    for _ in range(8):
        _c = (_c >> 1) ^ (0x82F63B78 & -(_c & 1))
    _TABLE.append(_c)
del _n, _c


def crc32c(data: Any, crc: int = 0) -> int:
    """CRC32C of any buffer, continuing from ``crc`` (table-driven)."""
    view = memoryview(data).cast("B") if not isinstance(data, bytes) else data
    c = (crc & 0xFFFFFFFF) ^ 0xFFFFFFFF
    table = _TABLE
    for b in bytes(view):
        c = table[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


_NOT_FULL = re.compile(rb"[^\xff]")
_U32 = struct.Struct("<I")
_OS_PAGE = mmap.PAGESIZE


class PyCore:
    """One open file (see _core_api.Core)."""

    def __init__(self, fd: int, page_size: int, writable: bool, sync: bool, prealloc: bool) -> None:
        self._fd = fd
        self._writable = writable
        self._sync = sync
        self._prealloc = prealloc
        self._hook: Callable[[str], None] | None = None
        self._closed = False
        self._poisoned = False
        self._in_batch = False
        self._grew = False
        self._load(page_size)

    # -- open and validate ---------------------------------------------------------------

    def _load(self, wanted: int) -> None:
        size = os.fstat(self._fd).st_size
        if size < 1024:
            raise CorruptSuperblock("not a mappedpages file: shorter than a superblock")
        head = os.pread(self._fd, 1024, 0)
        magic, version, ps = fmt.IDENTITY.unpack_from(head, 0)
        if magic != fmt.MAGIC:
            raise CorruptSuperblock("not a mappedpages file: bad magic")
        if _U32.unpack_from(head, fmt.IDENTITY_CRC_OFFSET)[0] != crc32c(head[:60]):
            raise CorruptSuperblock("superblock identity checksum mismatch")
        if version != fmt.FORMAT_VERSION:
            raise CorruptSuperblock(f"format version {version} is not supported")
        if not fmt.valid_page_size(ps):
            raise CorruptSuperblock(f"superblock page size {ps} is invalid")
        if wanted and wanted != ps:
            raise InvalidPageSize(f"the file's page size is {ps}, not {wanted}")
        if size < 3 * ps:
            raise CorruptSuperblock("file is shorter than its three reserved pages")
        self.geometry = geo = fmt.Geometry(ps)
        self._ps: int = ps
        self._m = geo.block
        metas = [os.pread(self._fd, geo.block, p * ps) for p in (1, 2)]
        gens = [self._block_gen(metas[i], 1 + i, fmt.META_MAGIC) for i in (0, 1)]
        # the newest valid commit record whose metadata copy matches it; none (a damaged page 0
        # or active metadata copy): the newest valid metadata copy, with an empty log
        chosen, gen, meta_gen, log = -1, 0, 0, b""
        head += os.pread(self._fd, fmt.RECORD_SIZE, 1024) if fmt.record_count(ps) > 1 else b""
        rec_index, found, passed = fmt.select_record(
            head, ps, metas, gens, size, lambda off, n: os.pread(self._fd, n, off), crc32c
        )
        if found is not None:
            chosen, gen, meta_gen, log = found.active, found.generation, found.meta_gen, found.log
        rec_index = max(rec_index, 0)
        if chosen < 0:
            if not any(gens):
                raise CorruptMetadata("neither metadata copy is valid")
            chosen = 0 if gens[0] >= gens[1] else 1
            gen = meta_gen = gens[chosen]
        meta = metas[chosen]
        n, free, dir_a, dir_b = fmt.META_FIELDS.unpack_from(meta, fmt.META_FIELDS_OFFSET)
        if n < 3 or n * ps > size:
            raise CorruptMetadata(f"metadata page count {n} does not fit the file")
        if geo.fix_end(n) != n:
            raise CorruptMetadata(f"page count {n} cuts a bitmap group")
        for page in (dir_a, dir_b):
            if page >= n or 0 < page < fmt.RESERVED_PAGES:
                raise CorruptMetadata(f"directory index page {page} is outside the file")
        if (dir_a == 0) != (dir_b == 0) or (dir_a and dir_a == dir_b):
            raise CorruptMetadata("the directory index needs two distinct pages")
        self._dir: tuple[int, int] = (dir_a, dir_b)
        self._staged: list[int] = []  # pages written by the layer above for the next commit
        self._forced = False
        self._meta_dirty = False  # the directory pointers changed: rewrite the metadata
        self._two = False  # the layer above asked for two barriers
        self._active: int = chosen
        self._rec = rec_index
        self._nrec = fmt.record_count(ps)
        self._gen: int = gen
        self._meta_gen: int = meta_gen
        self._log = self._log_committed = log
        self._n: int = n
        self._map()
        if passed and self._writable:
            # before anything else is written: were a later commit to make that page match
            # again and be cut short itself, the record would return, naming its blocks
            for i in passed:
                off = fmt.RECORD_OFFSET + i * fmt.RECORD_SIZE
                self._mm[off : off + fmt.RECORD_SIZE] = bytes(fmt.RECORD_SIZE)
            if self._sync:
                self._mm.flush(0, _OS_PAGE)
        self._bits = bytearray(self._bitmap_bytes(n))
        self._cur: list[int] = [chosen]
        self._dirty: set[int] = set()
        self._stale: set[int] = set()
        self._new: set[int] = set()  # groups made by growth since the last commit
        # pages the committed state uses that the current one freed: their bits stay set
        # until the commit, so that no allocation hands them out before it (held.c)
        self._held: set[int] = set()
        self._put_bits(0, meta[fmt.META_BITMAP_OFFSET :])
        for k in range(1, geo.group_count(n)):
            start = geo.group_start(k)
            best, best_gen = -1, 0
            for i in (0, 1):
                g = self._block_gen(self._block(start + i), start + i, fmt.GROUP_MAGIC)
                if g > self._gen:
                    self._stale.add(k)
                elif g > best_gen:
                    best, best_gen = i, g
            if best < 0:
                raise CorruptMetadata(f"bitmap group {k} has no valid copy")
            self._cur.append(best)
            self._put_bits(k, self._block(start + best)[fmt.GROUP_BITMAP_OFFSET :])
        self._trim()
        used = fmt.popcount(int.from_bytes(self._bits, "little"))
        if n - used != free:
            raise CorruptMetadata(f"free count {free} disagrees with the bitmap ({n - used})")
        for page in (0, 1, 2):
            if not self._get(page):
                raise CorruptMetadata("reserved pages 0-2 are not marked in use")
        for k in range(1, geo.group_count(n)):
            s = geo.group_start(k)
            if not (self._get(s) and self._get(s + 1)):
                raise CorruptMetadata(f"bitmap group {k}: its copy pages are not marked in use")
        self._free: int = free
        self._hint = 0

    def _block_gen(self, data: bytes, page: int, magic: bytes) -> int:
        """Generation of a valid block, 0 for an invalid one."""
        m, crc, gen, loc, res = fmt.BLOCK_HEADER.unpack_from(data, 0)
        if m != magic or loc != page or res != 0 or crc != crc32c(data[8:]):
            return 0
        return int(gen)

    def _bitmap_bytes(self, n: int) -> int:
        return (n + 63) // 64 * 8

    def _map(self) -> None:
        # mmap.mmap keeps a dup of the descriptor it is given, and a dup shares the writer's
        # flock: a view outliving close() would keep the file locked. A separate open file
        # description of the same file maps the same pages without sharing the lock.
        access = mmap.ACCESS_WRITE if self._writable else mmap.ACCESS_READ
        flags = (os.O_RDWR if self._writable else os.O_RDONLY) | os.O_CLOEXEC
        try:
            fd = os.open(f"/proc/self/fd/{self._fd}", flags)
        except OSError:
            fd = os.dup(self._fd)
        try:
            self._mm = mmap.mmap(fd, self._n * self._ps, access=access)
        finally:
            os.close(fd)

    def _block(self, page: int) -> bytes:
        off = page * self._ps
        return self._mm[off : off + self._m]

    def _span(self, k: int) -> tuple[int, int]:
        """(first page, number of pages) that group k describes."""
        geo = self.geometry
        return (0, geo.c0) if k == 0 else (geo.group_start(k), geo.c)

    def _put_bits(self, k: int, bits: bytes) -> None:
        first, span = self._span(k)
        lo = first // 8
        hi = min(lo + span // 8, len(self._bits))
        self._bits[lo:hi] = bits[: hi - lo]

    def _trim(self) -> None:
        """Clear bits at and beyond the page count (the file may hold stray ones)."""
        n = self._n
        if n % 8:
            self._bits[n // 8] &= (1 << (n % 8)) - 1
        self._bits[(n + 7) // 8 :] = bytes(len(self._bits) - (n + 7) // 8)

    def _get(self, page: int) -> bool:
        return bool(self._bits[page >> 3] >> (page & 7) & 1)

    # -- properties ----------------------------------------------------------------------

    def _live(self) -> None:
        if self._closed:
            raise Unavailable("the pager is closed")
        if self._poisoned:
            raise Unavailable("a commit failed; reopen the file")

    @property
    def page_size(self) -> int:
        return self._ps

    @property
    def page_count(self) -> int:
        self._live()
        return self._n

    @property
    def free_count(self) -> int:
        self._live()
        return self._free

    @property
    def generation(self) -> int:
        return self._gen

    @property
    def active(self) -> int:
        return self._active

    @property
    def writable(self) -> bool:
        return self._writable

    @property
    def directory(self) -> tuple[int, int]:
        return self._dir

    # -- allocation ----------------------------------------------------------------------

    def _writer(self) -> None:
        self._live()
        if not self._writable:
            raise Unavailable("the file is open read-only")

    def _find_free(self) -> int:
        """Lowest free page below the page count, or -1."""
        bits, n = self._bits, self._n
        m = _NOT_FULL.search(bits, self._hint)
        while m is not None:
            byte = m.start()
            self._hint = byte
            value = bits[byte]
            page = byte * 8 + ((~value) & (value + 1)).bit_length() - 1
            return page if page < n else -1
        self._hint = len(bits)
        return -1

    def _take(self, page: int) -> None:
        self._bits[page >> 3] |= 1 << (page & 7)
        self._free -= 1
        self._dirty.add(self.geometry.group_of(page))

    def _grow(self, need: int) -> None:
        geo = self.geometry
        old = self._n
        new = geo.grow_target(old, need)
        size = new * self._ps
        if self._prealloc:
            os.posix_fallocate(self._fd, 0, size)
        elif os.fstat(self._fd).st_size < size:
            os.ftruncate(self._fd, size)
        self._n = new
        self._bits.extend(bytes(self._bitmap_bytes(new) - len(self._bits)))
        self._free += new - old
        for k in range(geo.group_count(old), geo.group_count(new)):
            s = geo.group_start(k)
            self._cur.append(1)  # so that the first write goes to copy 0
            self._new.add(k)
            self._take(s)
            self._take(s + 1)
        self._map()
        self._grew = True
        self._dirty.add(0)

    def alloc(self) -> int:
        self._writer()
        page = self._find_free()
        if page < 0:
            self._grow(1)
            page = self._find_free()
        self._take(page)
        self._autocommit()
        return page

    def alloc_bulk(self, n: int) -> list[int]:
        self._writer()
        if n < 0:
            raise ValueError("n must be >= 0")
        avail = self._free - len(self._held)
        if n > avail:
            self._grow(n - avail)
        out = []
        for _ in range(n):
            page = self._find_free()
            self._take(page)
            out.append(page)
        self._autocommit()
        return out

    def _check_free(self, page: int) -> None:
        if not 0 <= page < self._n:
            raise OutOfBounds(f"page {page} is beyond the file ({self._n} pages)")
        if self.geometry.is_internal(page):
            raise ReservedPage(f"page {page} is internal to the file format")
        if not self._get(page) or page in self._held:
            raise DoubleFree(f"page {page} is already free")

    def _committed_uses(self, page: int) -> bool:
        geo, mm, ps = self.geometry, self._mm, self._ps
        meta = (1 + self._active) * ps
        if page >= fmt.META_FIELDS.unpack_from(mm, meta + fmt.META_FIELDS_OFFSET)[0]:
            return False  # beyond the committed file
        k = geo.group_of(page)
        if k in self._new:
            return False
        if k not in self._dirty:
            return self._get(page)  # as committed
        start = geo.group_start(k)
        if k == 0:
            bits = meta + fmt.META_BITMAP_OFFSET
        else:
            bits = (start + self._cur[k]) * ps + fmt.GROUP_BITMAP_OFFSET
        bit = page - start
        return bool(mm[bits + (bit >> 3)] >> (bit & 7) & 1)

    def _release(self, page: int) -> None:
        if self._in_batch and self._committed_uses(page):
            self._held.add(page)  # until the commit
        else:
            self._clear(page)
        self._free += 1
        self._dirty.add(self.geometry.group_of(page))

    def _clear(self, page: int) -> None:
        self._bits[page >> 3] &= ~(1 << (page & 7)) & 0xFF
        self._hint = min(self._hint, page >> 3)

    def free(self, page: int) -> None:
        self._writer()
        self._check_free(page)
        self._release(page)
        self._autocommit()

    def free_bulk(self, pages: Sequence[int]) -> None:
        self._writer()
        seen: set[int] = set()
        for page in pages:
            self._check_free(page)
            if page in seen:
                raise DoubleFree(f"page {page} appears twice")
            seen.add(page)
        for page in seen:
            self._release(page)
        self._autocommit()

    # -- batches and commits -------------------------------------------------------------

    def begin(self) -> None:
        self._writer()
        self._in_batch = True

    def stage(self, pages: Sequence[int]) -> None:
        self._writer()
        for page in pages:
            if not 0 <= page < self._n:
                raise OutOfBounds(f"page {page} is beyond the file ({self._n} pages)")
        self._staged.extend(pages)
        self._forced = True

    def set_directory(self, dir_a: int, dir_b: int) -> None:
        self._writer()
        if not (0 <= dir_a < self._n and 0 <= dir_b < self._n):
            raise OutOfBounds("directory index page beyond the file")
        self._dir = (dir_a, dir_b)
        self._forced = True
        self._meta_dirty = True

    @property
    def log(self) -> bytes:
        self._live()
        return self._log

    def two_barriers(self) -> None:
        self._writer()
        self._two = True

    def set_log(self, data: bytes) -> None:
        self._writer()
        most = fmt.RECORD_LOG_MAX if self._nrec > 1 else 0
        if len(data) > most or len(data) % 4:
            raise ValueError(f"a record log of {len(data)} bytes (at most {most}, a multiple of 4)")
        self._log = bytes(data)
        self._forced = True

    def rollback(self) -> None:
        self._live()
        self._in_batch = False
        self._held.clear()  # the committed state uses them: reloading the bitmap keeps them
        meta = self._block(1 + self._active)
        n, free, dir_a, dir_b = fmt.META_FIELDS.unpack_from(meta, fmt.META_FIELDS_OFFSET)
        geo = self.geometry
        self._n, self._free = n, free
        self._dir = (dir_a, dir_b)
        self._staged.clear()
        self._forced = False
        self._meta_dirty = False
        self._two = False
        self._log = self._log_committed
        del self._cur[geo.group_count(n) :]
        del self._bits[self._bitmap_bytes(n) :]
        for k in sorted(self._dirty):
            if k >= len(self._cur):
                continue
            if k == 0:
                self._put_bits(0, meta[fmt.META_BITMAP_OFFSET :])
            else:
                s = geo.group_start(k) + self._cur[k]
                self._put_bits(k, self._block(s)[fmt.GROUP_BITMAP_OFFSET :])
        self._trim()
        self._dirty.clear()
        self._new.clear()
        self._hint = 0

    def commit(self) -> None:
        self._writer()
        self._in_batch = False
        self._commit()

    def _autocommit(self) -> None:
        if not self._in_batch:
            self._commit()

    def _write_block(self, page: int, magic: bytes, body: bytes) -> None:
        block = bytearray(self._m)
        block[32:] = body
        fmt.BLOCK_HEADER.pack_into(block, 0, magic, 0, self._gen + 1, page, 0)
        _U32.pack_into(block, 4, crc32c(bytes(block[8:])))
        off = page * self._ps
        self._mm[off : off + self._m] = block

    def _group_body(self, k: int, offset: int) -> bytes:
        first, span = self._span(k)
        body = bytearray(self._m - offset)
        chunk = self._bits[first // 8 : first // 8 + span // 8]
        body[: len(chunk)] = chunk
        return bytes(body)

    def _commit(self) -> None:
        for page in self._held:  # this commit frees them: from now on they may be handed out
            self._clear(page)
        self._held.clear()
        groups = self._dirty | self._stale
        if not groups and not self._grew and not self._forced:
            return
        geo = self.geometry
        written: list[tuple[int, int]] = [(p * self._ps, self._ps) for p in self._staged]
        try:
            for k in sorted(groups - {0}):
                s = geo.group_start(k)
                target = s + 1 - self._cur[k]
                if k in self._new:  # copy 1 of a new group may hold bytes of an older attempt
                    off = (s + 1) * self._ps
                    self._mm[off : off + 32] = bytes(32)
                    written.append((off, 32))
                self._write_block(target, fmt.GROUP_MAGIC, self._group_body(k, 32))
                written.append((target * self._ps, self._m))
            # staged pages and the log alone leave the metadata as it is: the record names it
            meta_written = bool(groups) or self._grew or self._meta_dirty or self._nrec < 2
            active, meta_gen = self._active, self._meta_gen
            if meta_written:
                active, meta_gen = 1 - active, self._gen + 1
                fields = fmt.META_FIELDS.pack(self._n, self._free, *self._dir)
                body = fields + bytes(96 - len(fields)) + self._group_body(0, 128)
                self._write_block(1 + active, fmt.META_MAGIC, body)
                written.append(((1 + active) * self._ps, self._m))
            # few pages besides the metadata (which the record names with its crc): one
            # barrier, the record listing them with their checksums
            pages = sorted({off // self._ps for off, _ in written} - {1, 2})
            single = (
                self._nrec > 1
                and not self._grew
                and not self._two
                and len(pages) <= fmt.RECORD_CHECKS
                and self._ps <= fmt.ONE_BARRIER_MAX_PAGE
            )
            if not single:
                self._barrier("barrier1", written)
            off = (1 + active) * self._ps
            (meta_crc,) = _U32.unpack(self._mm[off + 4 : off + 8])
            rec = bytearray(fmt.RECORD_SIZE)
            log = self._log
            fmt.RECORD.pack_into(
                rec, 0, fmt.RECORD_MAGIC, active, self._gen + 1, meta_crc, len(log), meta_gen
            )
            rec[fmt.RECORD_LOG_OFFSET : fmt.RECORD_LOG_OFFSET + len(log)] = log
            if single:
                ps, base = self._ps, fmt.RECORD_CHECK_OFFSET
                fmt.RECORD_CHECK_HEAD.pack_into(rec, base, len(pages), fmt.RECORD_ONE_BARRIER)
                for i, page in enumerate(pages):
                    check = crc32c(self._mm[page * ps : (page + 1) * ps])
                    at = base + fmt.RECORD_CHECK_HEAD.size + i * fmt.RECORD_CHECK.size
                    fmt.RECORD_CHECK.pack_into(rec, at, page, check)
            _U32.pack_into(rec, fmt.RECORD_CRC_OFFSET, crc32c(bytes(rec[: fmt.RECORD_CRC_OFFSET])))
            rec_index = 1 - self._rec if self._nrec > 1 else 0
            off = fmt.RECORD_OFFSET + rec_index * fmt.RECORD_SIZE
            self._mm[off : off + fmt.RECORD_SIZE] = rec
            self._barrier("barrier2", [(0, self._m), *(written if single else [])])
        except BaseException:
            self._poisoned = True
            raise
        self._gen += 1
        self._rec = rec_index
        self._active, self._meta_gen = active, meta_gen
        self._log_committed = log
        self._meta_dirty = False
        self._two = False
        for k in groups - {0}:
            self._cur[k] = 1 - self._cur[k]
        self._dirty.clear()
        self._stale.clear()
        self._new.clear()
        self._grew = False
        self._staged.clear()
        self._forced = False

    def _barrier(self, kind: str, spans: list[tuple[int, int]]) -> None:
        """Call the hook, then make ``spans`` (offset, length) of the mapping durable."""
        if self._hook is not None:
            self._hook(kind)
        if not self._sync or not spans:
            return
        if kind == "barrier1" and self._grew:
            os.fdatasync(self._fd)
            self._grew = False
            return
        lo = min(off for off, _ in spans) // _OS_PAGE * _OS_PAGE
        hi = (max(off + n for off, n in spans) + _OS_PAGE - 1) // _OS_PAGE * _OS_PAGE
        self._mm.flush(lo, min(hi, len(self._mm)) - lo)

    # -- reading -------------------------------------------------------------------------

    def is_allocated(self, page: int) -> bool:
        self._live()
        if not 0 <= page < self._n:
            raise OutOfBounds(f"page {page} is beyond the file ({self._n} pages)")
        return self._get(page) and page not in self._held

    def scan(self, start: int, limit: int) -> list[int]:
        self._live()
        out: list[int] = []
        geo, bits, n = self.geometry, self._bits, self._n
        page = max(start, 0)
        while page < n and len(out) < limit:
            byte = bits[page >> 3] >> (page & 7)
            if byte == 0:
                page = (page | 7) + 1
                continue
            if byte & 1 and not geo.is_internal(page) and page not in self._held:
                out.append(page)
            page += 1
        return out

    def bitmap(self) -> bytes:
        self._live()
        bits = bytearray(self._bits[: (self._n + 7) // 8])
        for page in self._held:
            bits[page >> 3] &= ~(1 << (page & 7)) & 0xFF
        return bytes(bits)

    def mapping(self) -> memoryview:
        self._live()
        view = memoryview(self._mm)
        return view if self._writable else view.toreadonly()

    def flush(self, pages: Sequence[int] | None = None) -> None:
        self._live()
        if self._hook is not None:
            self._hook("flush")
        if pages is None:
            self._mm.flush()
            os.fdatasync(self._fd)
            return
        for page in pages:
            if not 0 <= page < self._n:
                raise OutOfBounds(f"page {page} is beyond the file ({self._n} pages)")
        for page in pages:
            lo = page * self._ps // _OS_PAGE * _OS_PAGE
            hi = (page + 1) * self._ps
            self._mm.flush(lo, max(hi - lo, _OS_PAGE))

    def set_barrier_hook(self, hook: Callable[[str], None] | None) -> None:
        self._hook = hook

    def close(self) -> None:
        if self._closed:
            return
        try:
            if self._in_batch and not self._poisoned:
                self.rollback()
            if self._writable and not self._poisoned:
                self._commit()
                self._mm.flush()
                os.fdatasync(self._fd)
        finally:
            self._closed = True
            with contextlib.suppress(BufferError):  # views still use it: it lives until they go
                self._mm.close()


def open_core(fd: int, page_size: int, *, writable: bool, sync: bool, preallocate: bool) -> PyCore:
    return PyCore(fd, page_size, writable, sync, preallocate)
