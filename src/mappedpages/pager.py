"""The Pager: a file of fixed-size pages with crash-safe allocation (API.md, "Pager").

This layer checks handle types and page sizes, turns core indices into handles and hands out
memoryviews; allocation state, validation of indices, commits and the mapping belong to the
core (see _core_api.py), which is the C core or the pure-Python core.
"""

from __future__ import annotations

import os
import warnings
import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Callable, NoReturn, TypeVar, Union

from . import _backend
from ._files import create_locked, open_locked
from .errors import (
    DirectoryFull,
    DoubleFree,
    OutOfBounds,
    PageSizeMismatch,
    ReservedPage,
    Unavailable,
)
from .handles import PageId, ProtectedPageId, check_page_size, new_page_id, new_protected_id
from .protected import AllocatedProtectedPageIter, Directory, ProtectedPageWriter

__all__ = ["AllocatedPageIter", "Pager"]

StrPath = Union[str, "os.PathLike[str]"]
T = TypeVar("T")

# Scanning hands the iterator this many page numbers per call into the core.
_SCAN_CHUNK = 4096


class _DeadCore:
    """Stands in for the core once a pager is unusable: any use raises Unavailable."""

    def __init__(self, why: str) -> None:
        self._why = why

    def __getattr__(self, name: str) -> NoReturn:
        raise Unavailable(self._why)


_CLOSED = _DeadCore("the pager is closed; open the file again")
_FORKED = _DeadCore("the pager was opened before fork(); open the file again in this process")

_live: weakref.WeakSet[Pager] = weakref.WeakSet()
# Cores of pagers inherited through fork(): kept alive for ever, because releasing them in the
# child would unmap memory that the child's views may still point at.
_orphans: list[Any] = []


def _after_fork_in_child() -> None:
    for pager in list(_live):
        _orphans.append(pager._core)
        pager._core = _FORKED
        pager._n = 0  # so that the next index check asks the core, and raises
        pager._version += 1
    _live.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _wrong_handle(handle: object, expected: type) -> Exception:
    if isinstance(handle, expected):
        return PageSizeMismatch(
            f"{handle!r} belongs to a pager of page size {handle[1]}"  # type: ignore[index]
        )
    return TypeError(f"expected a {expected.__name__}, got {type(handle).__name__}")


class Pager:
    """A file of fixed-size pages. Make one with ``Pager.create`` or ``Pager.open``."""

    __slots__ = (
        "__weakref__",
        "_batch_depth",
        "_batch_doomed",
        "_c",
        "_c0",
        "_core",
        "_crc",
        "_dir",
        "_fd",
        "_freed",
        "_internal",
        "_n",
        "_path",
        "_ps",
        "_ro",
        "_rw",
        "_version",
        "_zero",
    )

    _core: Any  # a Core, or a _DeadCore once the pager is unusable
    _fd: int
    _path: str
    _ps: int
    _c0: int
    _c: int
    # A page count no larger than the core's: page counts only grow, except on rollback,
    # which refreshes it. Checking an index against it first keeps get_page off the core.
    _n: int
    _rw: memoryview
    _ro: memoryview
    _version: int
    _batch_depth: int
    _batch_doomed: bool
    _dir: Directory
    _internal: set[int]  # pages of the protected-page directory: never data pages
    _freed: set[int]  # pages freed since the last commit: never reused for directory pages
    _crc: Callable[[Any], int]
    _zero: bytes

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise TypeError("use Pager.create(path, ...) or Pager.open(path, ...)")

    # -- opening and closing -------------------------------------------------------------

    @classmethod
    def create(
        cls, path: StrPath, page_size: int = 4096, *, sync: bool = True, preallocate: bool = True
    ) -> Pager:
        """Create a new file (``FileExistsError`` if ``path`` exists) and open it."""
        page_size = check_page_size(page_size)
        spath = os.fspath(path)
        fd = create_locked(spath, page_size, _backend.CORE.crc32c)
        return cls._attach(fd, spath, page_size, sync, preallocate)

    @classmethod
    def open(
        cls,
        path: StrPath,
        page_size: int | None = None,
        *,
        sync: bool = True,
        preallocate: bool = True,
    ) -> Pager:
        """Open an existing file; ``page_size`` None takes it from the file."""
        wanted = 0 if page_size is None else check_page_size(page_size)
        spath = os.fspath(path)
        fd = open_locked(spath)
        return cls._attach(fd, spath, wanted, sync, preallocate)

    @classmethod
    def _attach(cls, fd: int, path: str, page_size: int, sync: bool, preallocate: bool) -> Pager:
        module = _backend.CORE
        try:
            core = module.open_core(
                fd, page_size, writable=True, sync=bool(sync), preallocate=bool(preallocate)
            )
        except BaseException:
            os.close(fd)
            raise
        try:
            directory = Directory.load(core.mapping(), core, module.crc32c)
        except BaseException:
            core.close()
            os.close(fd)
            raise
        self: Pager = object.__new__(cls)
        self._core = core
        self._fd = fd
        self._path = path
        self._ps = core.page_size
        self._c0 = core.geometry.c0
        self._c = core.geometry.c
        self._n = core.page_count
        self._version = 0
        self._batch_depth = 0
        self._batch_doomed = False
        self._crc = module.crc32c
        self._dir = directory
        self._internal = directory.internal
        self._freed = set()
        self._zero = b""
        self._remap()
        _live.add(self)
        if directory.needs_repair:  # leftovers of a commit that never completed
            self._protected_op(lambda: None)
        return self

    def close(self) -> None:
        """Make everything durable and release the file. Views stay readable; idempotent."""
        core = self._core
        if isinstance(core, _DeadCore):
            return
        self._core = _CLOSED
        self._n = 0  # so that the next index check asks the core, and raises
        self._version += 1
        self._batch_depth = 0
        self._rw = self._ro = memoryview(b"")
        _live.discard(self)
        try:
            core.close()
        finally:
            os.close(self._fd)

    def __enter__(self) -> Pager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        core = getattr(self, "_core", None)
        if core is None or isinstance(core, _DeadCore):
            return
        warnings.warn(f"unclosed Pager {self._path!r}", ResourceWarning, stacklevel=2)
        self.close()

    def __repr__(self) -> str:
        state = "closed" if isinstance(self._core, _DeadCore) else f"{self.page_count} pages"
        return f"<Pager {self._path!r} page_size={self._ps} {state}>"

    # -- properties ----------------------------------------------------------------------

    @property
    def page_size(self) -> int:
        return self._ps

    @property
    def page_count(self) -> int:
        """Pages in the file's allocation state, reserved pages 0-2 included."""
        return int(self._core.page_count)

    @property
    def free_page_count(self) -> int:
        return int(self._core.free_count)

    @property
    def path(self) -> str:
        return self._path

    # -- regular pages -------------------------------------------------------------------

    def alloc(self) -> PageId:
        """Allocate one page (growing the file when full): one commit."""
        index = self._core.alloc()
        self._version += 1
        return new_page_id(index, self._ps)

    def free(self, pid: PageId) -> None:
        if type(pid) is not PageId or pid[1] != self._ps:
            raise _wrong_handle(pid, PageId)
        index = pid[0]
        if index in self._internal:
            raise ReservedPage(f"page {index} belongs to the protected-page directory")
        self._core.free(index)
        if self._batch_depth:
            self._freed.add(index)
        self._version += 1

    def alloc_bulk(self, n: int) -> list[PageId]:
        """Allocate ``n`` pages in one commit."""
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"n must be an int, not {type(n).__name__}")
        if n < 0:
            raise ValueError(f"n must be >= 0, not {n}")
        if n == 0:
            return []
        indices = self._core.alloc_bulk(n)
        self._version += 1
        ps = self._ps
        return [new_page_id(i, ps) for i in indices]

    def free_bulk(self, ids: Iterable[PageId]) -> None:
        """Free every id in one commit; one bad id (or a duplicate) frees nothing."""
        ps = self._ps
        indices: list[int] = []
        for pid in ids:
            if type(pid) is not PageId or pid[1] != ps:
                raise _wrong_handle(pid, PageId)
            if pid[0] in self._internal:
                raise ReservedPage(f"page {pid[0]} belongs to the protected-page directory")
            indices.append(pid[0])
        if indices:
            self._core.free_bulk(indices)
            if self._batch_depth:
                self._freed.update(indices)
            self._version += 1

    def _data_index(self, pid: PageId) -> int:
        """The index of a data page that may be viewed; raises for anything else."""
        if type(pid) is not PageId or pid[1] != self._ps:
            raise _wrong_handle(pid, PageId)
        index: int = pid[0]
        if index >= self._n:
            self._n = n = self._core.page_count
            if index >= n:
                raise OutOfBounds(f"page {index} is beyond the file ({n} pages)")
        c0 = self._c0
        if index < 3 or (index >= c0 and (index - c0) % self._c < 2) or index in self._internal:
            raise ReservedPage(f"page {index} is internal to the file format")
        return index

    def get_page(self, pid: PageId) -> memoryview:
        """Read-only view of the page, straight into the mapping."""
        start = self._data_index(pid) * self._ps
        end = start + self._ps
        if end > len(self._ro):
            self._remap()
        return self._ro[start:end]

    def get_page_mut(self, pid: PageId) -> memoryview:
        """Writable view of the page; ``flush`` makes what is written durable."""
        start = self._data_index(pid) * self._ps
        end = start + self._ps
        if end > len(self._rw):
            self._remap()
        return self._rw[start:end]

    # -- protected pages -----------------------------------------------------------------

    def alloc_protected(self) -> ProtectedPageId:
        """Allocate a protected page (content: zeros) in one commit."""
        slot = self._protected_op(self._alloc_protected_one)
        self._version += 1
        return new_protected_id(slot, self._ps)

    def alloc_protected_bulk(self, n: int) -> list[ProtectedPageId]:
        """Allocate ``n`` protected pages in one commit: all of them or, on failure, none."""
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"n must be an int, not {type(n).__name__}")
        if n < 0:
            raise ValueError(f"n must be >= 0, not {n}")
        if n == 0:
            return []
        if n > self._dir.room():
            raise DirectoryFull(f"room for {self._dir.room()} more protected pages, not {n}")
        slots = self._protected_op(lambda: [self._alloc_protected_one() for _ in range(n)])
        self._version += 1
        ps = self._ps
        return [new_protected_id(s, ps) for s in slots]

    def free_protected(self, ppid: ProtectedPageId) -> None:
        slot = self._protected_slot(ppid)
        self._protected_op(lambda: self._free_slots([slot]))
        self._version += 1

    def free_protected_bulk(self, ids: Iterable[ProtectedPageId]) -> None:
        """Free every id in one commit; one bad id (or a duplicate) frees nothing."""
        slots: list[int] = []
        seen: set[int] = set()
        for ppid in ids:
            slot = self._protected_slot(ppid)
            if slot in seen:
                raise DoubleFree(f"protected page {slot} appears twice")
            seen.add(slot)
            slots.append(slot)
        if slots:
            self._protected_op(lambda: self._free_slots(slots))
            self._version += 1

    def get_protected_page(self, ppid: ProtectedPageId) -> memoryview:
        """Read-only view of the committed content; staged writes are not visible."""
        start = self._dir.current_page(self._protected_slot(ppid)) * self._ps
        end = start + self._ps
        if end > len(self._ro):
            self._remap()
        return self._ro[start:end]

    def protected_writer(self, ppid: ProtectedPageId) -> ProtectedPageWriter:
        """A writer for the page (also ``ppid.get_mut(pager)``): stage, then commit."""
        slot = self._protected_slot(ppid)
        content = bytes(self.get_protected_page(ppid))
        return ProtectedPageWriter(self, ppid, self._dir.serial[slot], content)

    def iter_allocated_protected_pages(self) -> AllocatedProtectedPageIter:
        """Ascending ids of the allocated protected pages."""
        self._check_live()
        return AllocatedProtectedPageIter(self, self._dir, self._ps)

    def _protected_slot(self, ppid: ProtectedPageId) -> int:
        if type(ppid) is not ProtectedPageId or ppid[1] != self._ps:
            raise _wrong_handle(ppid, ProtectedPageId)
        self._check_live()
        slot: int = ppid[0]
        if not self._dir.is_used(slot):
            raise OutOfBounds(f"protected page {slot} is not allocated")
        return slot

    def _commit_protected(self, ppid: ProtectedPageId, serial: int, content: bytearray) -> None:
        def write() -> None:
            slot = self._protected_slot(ppid)
            if self._dir.serial[slot] != serial:
                raise OutOfBounds(f"protected page {slot} was freed since the writer was made")
            target = self._dir.write_target(slot)
            view = self._core.mapping()
            view[target * self._ps : (target + 1) * self._ps] = content
            self._core.stage([target])

        self._protected_op(write)

    def _alloc_internal(self, k: int) -> list[int]:
        """``k`` pages for the directory, none of them freed since the last commit.

        A page freed in this uncommitted state is still in use in the committed one, and a
        crash before the commit must find it unchanged; directory pages are written before it.
        """
        core, freed = self._core, self._freed
        good: list[int] = []
        aside: list[int] = []
        while len(good) < k:
            for page in core.alloc_bulk(k - len(good)):
                (aside if page in freed else good).append(page)
        if aside:
            core.free_bulk(aside)
        return good

    def _alloc_protected_one(self) -> int:
        d = self._dir
        if not d.free_heap:
            if len(d.blocks) >= d.max_blocks:
                raise DirectoryFull("the protected-page directory is full")
            if not d.index_pages[0]:
                a, b = self._alloc_internal(2)
                d.create_index(a, b)
                self._core.set_directory(a, b)
            p0, p1 = self._alloc_internal(2)
            d.add_block(p0, p1)
        pa, pb = self._alloc_internal(2)
        ps = self._ps
        if len(self._zero) != ps:
            self._zero = bytes(ps)
        self._core.mapping()[pa * ps : (pa + 1) * ps] = self._zero
        self._core.stage([pa])
        return d.take_slot(pa, pb)

    def _free_slots(self, slots: list[int]) -> None:
        pages: list[int] = []
        for slot in slots:
            pages.extend(self._dir.release_slot(slot))
        self._core.free_bulk(pages)
        self._freed.update(pages)

    def _protected_op(self, fn: Callable[[], T]) -> T:
        """Run one directory change: its own commit, or part of the open batch."""
        if self._batch_depth:
            try:
                return fn()
            except BaseException:
                self._batch_doomed = True  # the directory cannot undo one call inside a batch
                raise
        self._core.begin()
        try:
            result = fn()
        except BaseException:
            self._abort()
            raise
        self._commit_all()
        return result

    def _commit_all(self) -> None:
        """Commit the open batch together with the directory blocks it changed."""
        core, d = self._core, self._dir
        if d.dirty or d.index_dirty:
            core.stage(d.write(core.mapping(), core.generation + 1, self._crc))
        core.commit()
        d.committed()
        self._freed.clear()

    def _abort(self) -> None:
        """Return to the last committed state: the core's bitmap and the directory."""
        core = self._core
        core.rollback()
        self._freed.clear()
        self._n = core.page_count
        self._version += 1
        self._dir = Directory.load(core.mapping(), core, self._crc)
        self._internal = self._dir.internal

    def _check_live(self) -> None:
        core = self._core
        if isinstance(core, _DeadCore):
            raise Unavailable(core._why)

    def _closed_or_dead(self) -> bool:
        return isinstance(self._core, _DeadCore)

    def _remap(self) -> None:
        self._rw = self._core.mapping()
        self._ro = self._rw.toreadonly()

    def iter_allocated_pages(self) -> AllocatedPageIter:
        """Ascending ids of the allocated regular data pages."""
        return AllocatedPageIter(self)

    def flush(self, ids: Iterable[PageId] | None = None) -> None:
        """Make data written through views durable: every page, or just ``ids``."""
        if ids is None:
            self._core.flush(None)
        else:
            self._core.flush([self._data_index(pid) for pid in ids])

    @contextmanager
    def batch(self) -> Iterator[Pager]:
        """Everything allocated or freed inside is committed by one commit at the end.

        If an exception leaves the block, none of it is kept. A batch inside a batch joins
        it; an exception leaving the inner block dooms the whole batch.
        """
        core = self._core
        if self._batch_depth == 0:
            core.begin()
            self._batch_doomed = False
        self._batch_depth += 1
        try:
            yield self
        except BaseException:
            self._end_batch(failed=True)
            raise
        self._end_batch(failed=False)

    def _end_batch(self, failed: bool) -> None:
        if self._batch_depth == 0:  # closed inside the block: close() rolled back
            return
        self._batch_depth -= 1
        if failed:
            self._batch_doomed = True
        if self._batch_depth:
            return
        if self._batch_doomed:
            self._abort()
            if not failed:
                raise RuntimeError("the batch was rolled back: an inner batch raised")
        else:
            self._commit_all()


class AllocatedPageIter(Iterator[PageId]):
    """Iterator over allocated regular pages; invalid once the allocation state changes."""

    __slots__ = ("_buf", "_next", "_pager", "_pos", "_version")

    def __init__(self, pager: Pager) -> None:
        self._pager = pager
        self._version = pager._version
        self._buf: list[int] = []
        self._pos = 0
        self._next = 0  # first page index not yet scanned

    def __iter__(self) -> AllocatedPageIter:
        return self

    def __next__(self) -> PageId:
        pager = self._pager
        if pager._version != self._version:
            if isinstance(pager._core, _DeadCore):
                raise Unavailable("the pager was closed while iterating")
            raise RuntimeError("allocation state changed during iteration")
        internal = pager._internal  # pages of the protected-page directory are not data pages
        while True:
            if self._pos == len(self._buf):
                if self._next < 0:
                    raise StopIteration
                self._buf = pager._core.scan(self._next, _SCAN_CHUNK)
                self._pos = 0
                if not self._buf:
                    self._next = -1
                    raise StopIteration
                self._next = self._buf[-1] + 1
            index = self._buf[self._pos]
            self._pos += 1
            if index not in internal:
                return new_page_id(index, pager._ps)
