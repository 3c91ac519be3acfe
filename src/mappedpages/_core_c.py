"""The C core (csrc/, through cffi): the same interface as _core_py, at C speed.

This module only translates: Python arguments to C, C error codes to the exceptions of
``mappedpages.errors``, and the C mappings to memoryviews that keep them alive. The C functions
and their contracts are declared in csrc/mappedpages.h.
"""

from __future__ import annotations

import functools
import os
import threading
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from . import format as fmt
from ._core_py.crc import check_seed
from ._mappedpages_c import ffi, lib
from ._v1 import V1State
from .errors import (
    CorruptMetadata,
    CorruptProtectedDirectory,
    CorruptSuperblock,
    DoubleFree,
    InvalidPageSize,
    OutOfBounds,
    RecoveryWarning,
    ReservedPage,
    Unavailable,
)

NAME = "c"

_ERRORS: dict[int, type[Exception]] = {
    lib.MP_E_OUT_OF_BOUNDS: OutOfBounds,
    lib.MP_E_RESERVED: ReservedPage,
    lib.MP_E_DOUBLE_FREE: DoubleFree,
    lib.MP_E_CORRUPT_SUPERBLOCK: CorruptSuperblock,
    lib.MP_E_CORRUPT_METADATA: CorruptMetadata,
    lib.MP_E_CORRUPT_DIRECTORY: CorruptProtectedDirectory,
    lib.MP_E_PAGE_SIZE: InvalidPageSize,
    lib.MP_E_UNAVAILABLE: Unavailable,
    lib.MP_E_NO_MEMORY: MemoryError,
    lib.MP_E_READ_ONLY: Unavailable,
    lib.MP_E_VALUE: ValueError,
    lib.MP_E_VERSION1: fmt.Version1,
}

lib.mp_crc32c_select(-1)  # builds the tables now, under the import lock, not in a race later


def _crc32c_cffi(data: Any, crc: int = 0) -> int:
    """CRC32C of any buffer, continuing from ``crc`` (hardware CRC32 where the CPU has it)."""
    if type(data) is not bytes:  # cffi passes bytes as they are; anything else by its buffer
        try:
            data = ffi.from_buffer(data)
        except (TypeError, BufferError):  # str, or a buffer that is not contiguous
            if isinstance(data, str):
                raise TypeError("crc32c needs a bytes-like object, not str") from None
            data = memoryview(data).tobytes()
    return lib.mp_crc32c(check_seed(crc), data, len(data))  # type: ignore[no-any-return]


crc32c: Callable[..., int]
try:  # bytes without cffi's per-call cost; everything else through the function above
    from ._crc32c import _set_fallback
    from ._crc32c import crc32c as crc32c

    _set_fallback(_crc32c_cffi)
except ImportError:  # built without it
    crc32c = _crc32c_cffi


def _raise(message: str, code: int, err: int) -> NoReturn:
    if code == lib.MP_E_OS:
        raise OSError(err, message or os.strerror(err))
    raise _ERRORS.get(code, RuntimeError)(message)


def _munmapper(length: int) -> Callable[[Any], None]:
    def release(addr: Any) -> None:
        lib.mp_unmap(addr, length)

    return release


def _u64s(values: Sequence[int]) -> Any:
    if any(v < 0 for v in values):
        raise OutOfBounds("an index is negative")
    return ffi.new("uint64_t[]", list(values))


def _fast_kind(function: str, core: Any) -> tuple[int, int, object]:
    """What the views' C quick path calls, with the GIL held: the function's and the core's
    addresses, and the object that keeps the core's memory."""
    function_address = ffi.cast("uintptr_t", ffi.addressof(lib, function))
    return int(function_address), int(ffi.cast("uintptr_t", core)), core


class _Mapped:
    """The exported mapping of a core or snapshot, as a memoryview that keeps it alive."""

    def __init__(self, export: Callable[..., int], epoch: Callable[..., int], owned: bool) -> None:
        self._export = export
        self._epoch_of = epoch
        self._owned = owned
        self._epoch = -1
        self.view = memoryview(b"")
        # Threads remapping at once must not both take ownership of one mapping: each owner
        # unmaps it when its views go, under the other's views.
        self._lock = threading.Lock()

    def get(self, handle: Any, check: Callable[[int], int], writable: bool) -> memoryview:
        with self._lock:
            if self._epoch_of(handle) != self._epoch:
                addr = ffi.new("char **")
                length = ffi.new("uint64_t *")
                epoch = check(self._export(handle, addr, length))  # of what it handed over
                if epoch != self._epoch:
                    # owned: the last view to go unmaps it; else the writer's, kept by the caller
                    owner = ffi.gc(addr[0], _munmapper(length[0])) if self._owned else addr[0]
                    view = memoryview(ffi.buffer(owner, length[0]))
                    self.view = view if writable else view.toreadonly()
                    self._epoch = epoch
            return self.view


class CCore:
    """One file open for writing (see _core_api.Core)."""

    def __init__(
        self,
        fd: int,
        page_size: int,
        writable: bool,
        sync: bool,
        prealloc: bool,
        v1: V1State | None = None,
    ) -> None:
        raw = lib.mp_new()
        if raw == ffi.NULL:
            raise MemoryError("cannot allocate a core")
        self._c = ffi.gc(raw, lib.mp_free)
        # kind() without the Python wrapper, for the views' index check (negative on error)
        self.kind_raw = functools.partial(lib.mp_kind, self._c)
        self.fast_kind = _fast_kind("mp_kind_try", self._c)
        # the views' checks before a writable view and a write_page, for the same core
        self.fast_write = (
            _fast_kind("mp_view_try", self._c)[0],
            _fast_kind("mp_write_try", self._c)[0],
        )
        flags = (
            (lib.MP_WRITABLE if writable else 0)
            | (lib.MP_SYNC if sync else 0)
            | (lib.MP_PREALLOCATE if prealloc else 0)
        )
        if v1 is None:
            r = lib.mp_open(self._c, fd, page_size, flags)
        else:
            r = self._upgrade(fd, flags, v1)
        if r < 0:
            self._check(r)
        if r == lib.MP_E_RECOVERED:
            warnings.warn(RecoveryWarning(self._message()), stacklevel=5)
        self._writable = writable
        self.geometry = fmt.Geometry(int(lib.mp_page_size(self._c)))
        self._hook: Callable[[str], None] | None = None
        self._in_batch = False  # for the hook: a flush inside a batch is no barrier
        self._map = _Mapped(lib.mp_map_export, lib.mp_map_epoch, True)
        self._closed = False
        self._table: Any = None

    def _upgrade(self, fd: int, flags: int, v1: V1State) -> int:
        n, ps = v1.page_count, v1.page_size
        keep = bytearray((n + 7) // 8)
        slots = sorted(v1.protected)
        for page in (0, 1, 2, *v1.data_pages, *(v1.protected[s] for s in slots)):
            keep[page >> 3] |= 1 << (page & 7)
        used = bytes(v1.used).ljust(len(keep), b"\0")
        from ._core_py.open import v1_pointer_sector

        return int(
            lib.mp_upgrade(
                self._c, fd, flags, ps, n, v1.generation, v1_pointer_sector(ps, v1.record_sector),
                used, bytes(keep), len(keep), _u64s(slots), _u64s([v1.protected[s] for s in slots]),
                len(slots), v1.slot_count, fmt.new_file_id(),
            )
        )  # fmt: skip

    def _message(self) -> str:
        return ffi.string(lib.mp_message(self._c)).decode("utf-8", "replace")  # type: ignore[no-any-return]

    def _check(self, r: int) -> int:
        if r < 0:
            _raise(self._message(), r, int(lib.mp_errno(self._c)))
        return r

    def _live(self) -> None:
        if self._closed:
            raise Unavailable("the pager is closed")

    # -- properties -----------------------------------------------------------------------

    @property
    def page_size(self) -> int:
        return int(lib.mp_page_size(self._c))

    @property
    def page_count(self) -> int:
        self._live()
        return int(lib.mp_page_count(self._c))

    @property
    def free_count(self) -> int:
        self._live()
        return int(lib.mp_free_count(self._c))

    @property
    def data_count(self) -> int:
        return int(lib.mp_data_count(self._c))

    @property
    def slot_count(self) -> int:
        return int(lib.mp_slot_count(self._c))

    @property
    def slots_used(self) -> int:
        return int(lib.mp_slots_used(self._c))

    @property
    def generation(self) -> int:
        return int(lib.mp_generation(self._c))

    @property
    def checkpoint(self) -> int:
        return int(lib.mp_checkpoint(self._c))

    @property
    def log_bytes(self) -> int:
        return int(lib.mp_log_bytes(self._c))

    @property
    def writable(self) -> bool:
        return self._writable

    @property
    def file_id(self) -> bytes:
        out = ffi.new("unsigned char[16]")
        lib.mp_file_id(self._c, out)
        return bytes(ffi.buffer(out, 16))

    # -- regular pages --------------------------------------------------------------------

    def alloc(self) -> int:
        r: int = lib.mp_alloc(self._c)
        if r < 0:
            self._check(r)
        if self._hook is not None:
            self._commit_observed()
        return r

    def alloc_bulk(self, n: int) -> list[int]:
        if n < 0:
            raise ValueError("n must be >= 0")
        out = ffi.new("uint64_t[]", n)
        self._changed(lib.mp_alloc_bulk(self._c, out, n))
        return ffi.unpack(out, n)  # type: ignore[no-any-return]

    def free(self, page: int) -> None:
        if page < 0:
            raise OutOfBounds(f"page {page} is beyond the file")
        self._changed(lib.mp_free_page(self._c, page))

    def free_bulk(self, pages: Sequence[int]) -> None:
        self._changed(lib.mp_free_bulk(self._c, _u64s(pages), len(pages)))

    def kind(self, page: int) -> int:
        if page < 0:
            raise OutOfBounds(f"page {page} is beyond the file")
        return self._check(lib.mp_kind(self._c, page))

    def is_allocated(self, page: int) -> bool:
        return self.kind(page) == 1

    def scan(self, start: int, limit: int) -> list[int]:
        out = ffi.new("uint64_t[]", limit)
        count = self._check(lib.mp_scan(self._c, max(start, 0), out, limit))
        return ffi.unpack(out, count)  # type: ignore[no-any-return]

    # -- protected pages ------------------------------------------------------------------

    def palloc(self, n: int) -> list[int]:
        out = ffi.new("uint64_t[]", n)
        self._changed(lib.mp_palloc(self._c, out, n))
        return ffi.unpack(out, n)  # type: ignore[no-any-return]

    def pfree(self, slots: Sequence[int]) -> None:
        self._changed(lib.mp_pfree(self._c, _u64s(slots), len(slots)))

    def pwrite(self, slot: int, content: Any) -> None:
        if slot < 0:
            raise OutOfBounds(f"protected page {slot} is not allocated")
        data = ffi.from_buffer(content)
        self._changed(lib.mp_pwrite(self._c, slot, data, len(data)))

    def ppage(self, slot: int) -> int:
        if slot < 0:
            raise OutOfBounds(f"protected page {slot} is not allocated")
        return self._check(lib.mp_ppage(self._c, slot))

    def pused(self, slot: int) -> bool:
        return slot >= 0 and bool(self._check(lib.mp_pused(self._c, slot)))

    def pscan(self, start: int, limit: int) -> list[int]:
        out = ffi.new("uint64_t[]", limit)
        count = self._check(lib.mp_pscan(self._c, max(start, 0), out, limit))
        return ffi.unpack(out, count)  # type: ignore[no-any-return]

    # -- batches and commits --------------------------------------------------------------

    def _changed(self, r: int) -> None:
        self._check(r)
        if self._hook is not None:
            self._commit_observed()

    def begin(self) -> None:
        self._check(lib.mp_begin(self._c))
        self._in_batch = True

    def commit(self) -> None:
        self._in_batch = False
        self._changed(lib.mp_commit(self._c))

    def rollback(self) -> None:
        self._in_batch = False
        self._check(lib.mp_rollback(self._c))

    def adopt(self) -> None:
        self._check(lib.mp_adopt_batch(self._c))

    def shrink(self) -> int:
        lost = self._check(lib.mp_shrink(self._c))
        if self._hook is not None:  # committed step by step: the cut only after the record
            self._commit_observed()
            lost = self._check(lib.mp_trim(self._c))
        return lost

    def checkpoint_now(self) -> None:
        self._changed(lib.mp_checkpoint_now(self._c))

    def reclaim(self) -> None:
        self._check(lib.mp_reclaim(self._c))

    def _commit_observed(self) -> None:
        """Run a pending commit step by step, calling the hook before each barrier."""
        c, hook = self._c, self._hook
        assert hook is not None
        if not self._check(lib.mp_pending(c)):
            return
        try:
            barriers = self._check(lib.mp_commit_step(c, lib.MP_STEP_WRITE))
            if barriers != 2:  # 2: a one-barrier commit, whose first barrier does nothing
                hook("barrier1")
            self._check(lib.mp_commit_step(c, lib.MP_STEP_SYNC1))
            self._check(lib.mp_commit_step(c, lib.MP_STEP_FLIP))
            hook("barrier2")
            self._check(lib.mp_commit_step(c, lib.MP_STEP_SYNC2))
            self._check(lib.mp_commit_step(c, lib.MP_STEP_DONE))
        except BaseException:
            lib.mp_poison(c)
            raise

    # -- the mapping, durability, snapshots -----------------------------------------------

    def mapping(self) -> memoryview:
        self._live()
        return self._map.get(self._c, self._check, self._writable)

    def flush(self, pages: Sequence[int] | None = None) -> None:
        self._live()
        if self._hook is not None and not self._in_batch:  # in a batch, the commit syncs
            self._hook("flush")
        if pages is None:
            self._check(lib.mp_flush_all(self._c))
            return
        self._check(lib.mp_flush_pages(self._c, _u64s(pages), len(pages)))

    def seal(self, pages: Sequence[int]) -> None:
        self._live()
        self._check(lib.mp_seal_pages(self._c, _u64s(pages), len(pages)))

    def retire(self, page: int, viewing: bool) -> bool:
        if page < 0:
            raise OutOfBounds(f"page {page} is beyond the file")
        r = self._check(lib.mp_retire(self._c, page, viewing))
        if r == 2:  # manual: the hook's turn before the copy's barrier
            try:
                assert self._hook is not None
                self._hook("retire")
            except BaseException:
                lib.mp_poison(self._c)
                raise
            self._check(lib.mp_retire_sync(self._c))
        return r > 0

    def sealed_runs(self) -> list[tuple[int, int]]:
        out = ffi.new("uint64_t[]", 2 * fmt.LISTED_MAX)
        n = self._check(lib.mp_sealed_runs(self._c, out))
        return [(out[2 * i], out[2 * i + 1]) for i in range(n)]

    def snapshot(self) -> CSnapshot:
        while True:
            view = self.mapping()  # the snapshot reads this mapping, which it keeps alive
            epoch = self._map._epoch
            try:
                return CSnapshot._of(self, view)
            except ValueError:
                # another thread's call grew the file and remapped in between: take the new
                if int(lib.mp_map_epoch(self._c)) == epoch:
                    raise

    def attach_table(self, table: Any) -> None:
        self._check(lib.mp_attach_table(self._c, table.fd))
        self._table = table

    def set_barrier_hook(self, hook: Callable[[str], None] | None) -> None:
        self._check(lib.mp_set_manual(self._c, hook is not None))
        self._hook = hook

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._check(lib.mp_close(self._c))


class CSnapshot:
    """The state of one commit, read-only (see _core_api.SnapshotCore)."""

    geometry: fmt.Geometry

    def __init__(self) -> None:
        raw = lib.mp_snap_new()
        if raw == ffi.NULL:
            raise MemoryError("cannot allocate a snapshot")
        self._s = ffi.gc(raw, lib.mp_snap_free)
        self.kind_raw = functools.partial(lib.mp_snap_kind, self._s)
        self.fast_kind = _fast_kind("mp_snap_kind_try", self._s)
        self._writer: CCore | None = None
        self._view: memoryview | None = None
        self._map = _Mapped(lib.mp_snap_map_export, lib.mp_snap_map_epoch, True)

    @classmethod
    def _open(cls, fd: int, page_size: int) -> CSnapshot:
        self = cls()
        self._check(lib.mp_snap_open(self._s, fd, page_size))
        self.geometry = fmt.Geometry(int(lib.mp_snap_page_size(self._s)))
        return self

    @classmethod
    def _of(cls, writer: CCore, view: memoryview) -> CSnapshot:
        self = cls()
        buf = ffi.from_buffer(view)
        self._check(lib.mp_snap_of(self._s, writer._c, buf, len(view)))
        self._writer, self._view = writer, view
        self._map = _Mapped(lib.mp_snap_map_export, lib.mp_snap_map_epoch, False)
        self.geometry = writer.geometry
        return self

    def _check(self, r: int) -> int:
        if r < 0:
            message = ffi.string(lib.mp_snap_message(self._s)).decode("utf-8", "replace")
            _raise(message, r, int(lib.mp_snap_errno(self._s)))
        return r

    page_size = property(lambda self: int(lib.mp_snap_page_size(self._s)))
    generation = property(lambda self: int(lib.mp_snap_generation(self._s)))
    data_count = property(lambda self: int(lib.mp_snap_data_count(self._s)))
    slot_count = property(lambda self: int(lib.mp_snap_slot_count(self._s)))
    slots_used = property(lambda self: int(lib.mp_snap_slots_used(self._s)))
    record_slot = property(lambda self: int(lib.mp_snap_record_slot(self._s)))

    @property
    def page_count(self) -> int:
        self._live()
        return int(lib.mp_snap_page_count(self._s))

    @property
    def free_count(self) -> int:
        self._live()
        return int(lib.mp_snap_free_count(self._s))

    def _live(self) -> None:
        if self._s is None:
            raise Unavailable("the snapshot is closed")

    def kind(self, page: int) -> int:
        if page < 0:
            raise OutOfBounds(f"page {page} is beyond the file")
        return self._check(lib.mp_snap_kind(self._s, page))

    def kinds(self, start: int, n: int) -> bytes:
        if start < 0 or n < 0:
            raise OutOfBounds(f"pages {start} .. {start + n} are beyond the file")
        out = ffi.new("unsigned char[]", max(n, 1))
        return ffi.buffer(out, self._check(lib.mp_snap_kinds(self._s, start, out, n)))[:]  # type: ignore[no-any-return]

    def record_block(self) -> bytes:
        self._live()
        out = ffi.new("unsigned char[]", 4096)
        return ffi.buffer(out, self._check(lib.mp_snap_record(self._s, out, 4096)))[:]  # type: ignore[no-any-return]

    def scan(self, start: int, limit: int) -> list[int]:
        out = ffi.new("uint64_t[]", limit)
        count = self._check(lib.mp_snap_scan(self._s, max(start, 0), out, limit))
        return ffi.unpack(out, count)  # type: ignore[no-any-return]

    def pused(self, slot: int) -> bool:
        return slot >= 0 and bool(self._check(lib.mp_snap_pused(self._s, slot)))

    def ppage(self, slot: int) -> int:
        if slot < 0:
            raise OutOfBounds(f"protected page {slot} is not allocated")
        return self._check(lib.mp_snap_ppage(self._s, slot))

    def pscan(self, start: int, limit: int) -> list[int]:
        out = ffi.new("uint64_t[]", limit)
        count = self._check(lib.mp_snap_pscan(self._s, max(start, 0), out, limit))
        return ffi.unpack(out, count)  # type: ignore[no-any-return]

    def mapping(self) -> memoryview:
        if self._view is not None:
            return self._view.toreadonly()
        return self._map.get(self._s, self._check, False)

    def newer(self) -> bool:
        return bool(self._check(lib.mp_snap_newer(self._s)))

    def refresh(self) -> bool:
        return bool(self._check(lib.mp_snap_refresh(self._s)))

    def close(self) -> None:
        lib.mp_snap_close(self._s)


def open_core(fd: int, page_size: int, *, writable: bool, sync: bool, preallocate: bool) -> CCore:
    return CCore(fd, page_size, writable, sync, preallocate)


def upgrade_core(fd: int, v1: V1State, *, sync: bool, preallocate: bool) -> CCore:
    return CCore(fd, v1.page_size, True, sync, preallocate, v1)


def open_snapshot(fd: int, page_size: int) -> CSnapshot:
    return CSnapshot._open(fd, page_size)


def newest_generation(fd: int, page_size: int) -> int:
    snap = CSnapshot()
    return snap._check(lib.mp_snap_newest(snap._s, fd, page_size))


def fence() -> None:
    lib.mp_fence()
