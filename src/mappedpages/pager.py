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
from typing import Any, NoReturn, Union

from . import _backend
from ._files import create_locked, open_locked
from .errors import OutOfBounds, PageSizeMismatch, ReservedPage, Unavailable
from .handles import PageId, check_page_size, new_page_id

__all__ = ["AllocatedPageIter", "Pager"]

StrPath = Union[str, "os.PathLike[str]"]

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
        "_fd",
        "_n",
        "_path",
        "_ps",
        "_ro",
        "_rw",
        "_version",
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
        try:
            core = _backend.CORE.open_core(
                fd, page_size, writable=True, sync=bool(sync), preallocate=bool(preallocate)
            )
        except BaseException:
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
        self._remap()
        _live.add(self)
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
        self._core.free(pid[0])
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
            indices.append(pid[0])
        if indices:
            self._core.free_bulk(indices)
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
        if index < 3 or (index >= c0 and (index - c0) % self._c < 2):
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
            self._core.rollback()
            self._n = self._core.page_count
            self._version += 1
            if not failed:
                raise RuntimeError("the batch was rolled back: an inner batch raised")
        else:
            self._core.commit()


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
        return new_page_id(index, pager._ps)
