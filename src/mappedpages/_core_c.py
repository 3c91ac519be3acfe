"""The C core (csrc/, through cffi): the same interface as _core_py.py, at C speed.

This module only translates: Python arguments to C, C error codes to the exceptions of
``mappedpages.errors``, and the C mapping to memoryviews that keep it alive. The C functions
and their contracts are declared in csrc/mappedpages.h.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from . import format as fmt
from ._mappedpages_c import ffi, lib
from .errors import (
    CorruptMetadata,
    CorruptSuperblock,
    DoubleFree,
    InvalidPageSize,
    OutOfBounds,
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
    lib.MP_E_PAGE_SIZE: InvalidPageSize,
    lib.MP_E_UNAVAILABLE: Unavailable,
    lib.MP_E_NO_MEMORY: MemoryError,
    lib.MP_E_READ_ONLY: Unavailable,
    lib.MP_E_VALUE: ValueError,
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
    return lib.mp_crc32c(crc & 0xFFFFFFFF, data, len(data))  # type: ignore[no-any-return]


crc32c: Callable[..., int]
try:  # bytes without cffi's per-call cost; everything else through the function above
    from ._crc32c import _set_fallback
    from ._crc32c import crc32c as crc32c

    _set_fallback(_crc32c_cffi)
except ImportError:  # built without it
    crc32c = _crc32c_cffi


def _raise(core: Any, code: int) -> NoReturn:
    message = ffi.string(lib.mp_message(core)).decode("utf-8", "replace")
    if code == lib.MP_E_OS:
        import os

        err = int(lib.mp_errno(core))
        raise OSError(err, message or os.strerror(err))
    raise _ERRORS.get(code, RuntimeError)(message)


def _munmapper(length: int) -> Callable[[Any], None]:
    def release(addr: Any) -> None:
        lib.mp_unmap(addr, length)

    return release


class CCore:
    """One open file (see _core_api.Core)."""

    def __init__(self, fd: int, page_size: int, writable: bool, sync: bool, prealloc: bool) -> None:
        raw = lib.mp_new()
        if raw == ffi.NULL:
            raise MemoryError("cannot allocate a core")
        self._c = ffi.gc(raw, lib.mp_free)
        flags = (
            (lib.MP_WRITABLE if writable else 0)
            | (lib.MP_SYNC if sync else 0)
            | (lib.MP_PREALLOCATE if prealloc else 0)
        )
        r = lib.mp_open(self._c, fd, page_size, flags)
        if r < 0:
            _raise(self._c, r)
        self._writable = writable
        self.geometry = fmt.Geometry(int(lib.mp_page_size(self._c)))
        self._hook: Callable[[str], None] | None = None
        self._epoch = -1
        self._view = memoryview(b"")
        self._closed = False

    def _check(self, r: int) -> int:
        if r < 0:
            _raise(self._c, r)
        return r

    def _live(self) -> None:
        if self._closed:
            raise Unavailable("the pager is closed")

    # -- properties ----------------------------------------------------------------------

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
    def generation(self) -> int:
        return int(lib.mp_generation(self._c))

    @property
    def active(self) -> int:
        return int(lib.mp_active(self._c))

    @property
    def writable(self) -> bool:
        return self._writable

    # -- allocation ----------------------------------------------------------------------

    def alloc(self) -> int:
        r: int = lib.mp_alloc(self._c)
        if r < 0:
            _raise(self._c, r)
        if self._hook is not None:
            self._commit_observed()
        return r

    def alloc_bulk(self, n: int) -> list[int]:
        if n < 0:
            raise ValueError("n must be >= 0")
        out = ffi.new("uint64_t[]", n)
        self._check(lib.mp_alloc_bulk(self._c, out, n))
        if self._hook is not None:
            self._commit_observed()
        return ffi.unpack(out, n)  # type: ignore[no-any-return]

    def free(self, page: int) -> None:
        if page < 0:
            raise OutOfBounds(f"page {page} is beyond the file")
        r = lib.mp_free_page(self._c, page)
        if r < 0:
            _raise(self._c, r)
        if self._hook is not None:
            self._commit_observed()

    def free_bulk(self, pages: Sequence[int]) -> None:
        if any(p < 0 for p in pages):
            raise OutOfBounds("a page index is negative")
        self._check(lib.mp_free_bulk(self._c, ffi.new("uint64_t[]", list(pages)), len(pages)))
        if self._hook is not None:
            self._commit_observed()

    # -- batches and commits -------------------------------------------------------------

    def begin(self) -> None:
        self._check(lib.mp_begin(self._c))

    @property
    def directory(self) -> tuple[int, int]:
        return (int(lib.mp_directory(self._c, 0)), int(lib.mp_directory(self._c, 1)))

    def set_directory(self, dir_a: int, dir_b: int) -> None:
        if dir_a < 0 or dir_b < 0:
            raise OutOfBounds("a directory page index is negative")
        self._check(lib.mp_set_directory(self._c, dir_a, dir_b))

    @property
    def log(self) -> bytes:
        out = ffi.new("unsigned char[]", fmt.RECORD_LOG_MAX)
        n = self._check(lib.mp_log(self._c, out))
        return bytes(ffi.buffer(out, n))

    def two_barriers(self) -> None:
        self._check(lib.mp_two_barriers(self._c))

    def set_log(self, data: bytes) -> None:
        self._check(lib.mp_set_log(self._c, data, len(data)))

    def stage(self, pages: Sequence[int]) -> None:
        if any(p < 0 for p in pages):
            raise OutOfBounds("a page index is negative")
        self._check(lib.mp_stage(self._c, ffi.new("uint64_t[]", list(pages)), len(pages)))

    def commit(self) -> None:
        self._check(lib.mp_commit(self._c))
        if self._hook is not None:
            self._commit_observed()

    def rollback(self) -> None:
        self._check(lib.mp_rollback(self._c))

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

    # -- reading -------------------------------------------------------------------------

    def is_allocated(self, page: int) -> bool:
        if page < 0:
            raise OutOfBounds(f"page {page} is beyond the file")
        return bool(self._check(lib.mp_is_allocated(self._c, page)))

    def scan(self, start: int, limit: int) -> list[int]:
        out = ffi.new("uint64_t[]", limit)
        count = self._check(lib.mp_scan(self._c, max(start, 0), out, limit))
        return ffi.unpack(out, count)  # type: ignore[no-any-return]

    def bitmap(self) -> bytes:
        self._live()
        out = ffi.new("unsigned char[]", (int(lib.mp_page_count(self._c)) + 7) // 8)
        self._check(lib.mp_bitmap_bytes(self._c, out, len(out)))
        return bytes(ffi.buffer(out))

    def mapping(self) -> memoryview:
        self._live()
        epoch = lib.mp_map_epoch(self._c)
        if epoch != self._epoch:
            addr = ffi.new("char **")
            length = ffi.new("uint64_t *")
            self._check(lib.mp_map_export(self._c, addr, length))
            # the buffer keeps the gc-owned pointer alive; the last view to go unmaps it
            owner = ffi.gc(addr[0], _munmapper(length[0]))
            view = memoryview(ffi.buffer(owner, length[0]))
            self._view = view if self._writable else view.toreadonly()
            self._epoch = epoch
        return self._view

    def flush(self, pages: Sequence[int] | None = None) -> None:
        self._live()
        if self._hook is not None:
            self._hook("flush")
        if pages is None:
            self._check(lib.mp_flush_all(self._c))
            return
        if any(p < 0 for p in pages):
            raise OutOfBounds("a page index is negative")
        self._check(lib.mp_flush_pages(self._c, ffi.new("uint64_t[]", list(pages)), len(pages)))

    def set_barrier_hook(self, hook: Callable[[str], None] | None) -> None:
        self._check(lib.mp_set_manual(self._c, hook is not None))
        self._hook = hook

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._check(lib.mp_close(self._c))


def open_core(fd: int, page_size: int, *, writable: bool, sync: bool, preallocate: bool) -> CCore:
    return CCore(fd, page_size, writable, sync, preallocate)
